//! What a hostile archive or staging record can make root hold in memory:
//! tar headers that claim gigabytes are refused before anything is
//! buffered, and staging records are read with a cap.

use crate::common::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// 256 MiB of address space: far less than the gigabyte the headers below
/// claim, far more than the binary needs to stage (it starts in a few MiB).
const AS_LIMIT: &str = "--as=268435456";

/// A header block of type `kind` (a GNU header, as GNU tar writes them)
/// claiming `size` bytes.
fn header(kind: u8, name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Write `out`: a zstd-compressed tar whose first header is of type
/// `kind` and claims 1 GiB, followed by that gigabyte of zeros, a file and
/// the end blocks. Compressed, a few dozen KiB.
fn bomb(out: &Path, kind: u8) {
    let mut z = Command::new("zstd")
        .args(["-q", "-1", "-f", "-o"])
        .arg(out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("running zstd");
    let mut w = z.stdin.take().unwrap();
    w.write_all(&header(kind, "././@LongLink", 1 << 30))
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        w.write_all(&zeros).unwrap();
    }
    w.write_all(&header(b'0', "version", 0)).unwrap();
    w.write_all(&[0; 1024]).unwrap();
    drop(w);
    assert!(z.wait().unwrap().success(), "zstd failed");
}

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `stage` of each bomb, from a file (with its right `--sha256`) and from
/// stdin, under a 256 MiB address-space limit: exit 2, one line naming the
/// archive and the entry, nothing changed on disk.
#[test]
fn header_bombs_are_refused_before_anything_is_buffered() {
    if !have_tool("zstd") || !have_tool("prlimit") {
        return;
    }
    let d = Dir::new();
    // releases/ exists and holds a release: it must stay exactly as it is.
    let src = d.outside().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("version"), "v1\n").unwrap();
    d.cmd().arg("stage").arg(&src).args(["--id", "v1"]).ok();
    let before = d.tree();
    let kinds: [(u8, &str, u64); 4] = [
        (b'L', "GNU long name or link target", 4096),
        (b'K', "GNU long name or link target", 4096),
        (b'x', "PAX header", 1 << 20),
        (b'g', "PAX header", 1 << 20),
    ];
    // Outside the listed tree.
    let work = tempfile::tempdir().unwrap();
    let mut refused = 0;
    for (kind, what, limit) in kinds {
        let path = work.path().join(format!("bomb-{}.tar.zst", kind as char));
        bomb(&path, kind);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 1 << 20, "the bomb is {size} bytes");
        let expected = format!(
            "entry 1 (header at byte 0) is a {what} of 1073741824 bytes (the limit is {limit} bytes)"
        );
        let from_file = TestCommand::under(&["prlimit", AS_LIMIT])
            .args(["--root"])
            .arg(d.root())
            .arg("stage")
            .arg(&path)
            .args(["--id", "bomb", "--sha256", &sha256_of(&path)])
            .run();
        let from_stdin = TestCommand::under(&["prlimit", AS_LIMIT])
            .args(["--root"])
            .arg(d.root())
            .args(["stage", "--id", "bomb", "-"])
            .stdin_file(&path)
            .run();
        for (r, named) in [
            (from_file, path.display().to_string()),
            (from_stdin, "-".into()),
        ] {
            assert_eq!(r.code, Some(2), "{r}");
            let line = r.one_line_error();
            assert!(line.contains("archive refused"), "{r}");
            assert!(line.contains(&expected), "{r}");
            assert!(line.contains(&named) || named == "-", "{r}");
            before.assert_same(&d.tree(), &r.shown);
            refused += 1;
        }
        std::fs::remove_file(&path).unwrap();
    }
    assert_eq!(refused, 8);
}

/// Long names within the limits still stage: a 300-byte path as GNU tar
/// writes it (an `L` entry), a long symlink target (a `K` entry) and the
/// same as PAX headers.
#[test]
fn long_names_within_the_limits_still_stage() {
    let d = Dir::new();
    let long_dir = "d".repeat(150);
    let long_name = format!("{long_dir}/{}", "f".repeat(150));
    let target = format!("{long_dir}/{}", "t".repeat(200));

    let gnu = d.outside().join("gnu.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&gnu).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    b.append_data(&mut h, &long_name, &b"hello\n"[..]).unwrap();
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    l.set_mode(0o777);
    b.append_link(&mut l, "link", &target).unwrap();
    b.into_inner().unwrap().sync_all().unwrap();
    let raw = std::fs::read(&gnu).unwrap();
    assert!(
        raw.windows(13).any(|w| w == b"././@LongLink"),
        "no GNU long name"
    );
    d.cmd().arg("stage").arg(&gnu).args(["--id", "gnu"]).ok();
    let staged = d.path("releases/gnu");
    assert_eq!(std::fs::read(staged.join(&long_name)).unwrap(), b"hello\n");
    assert_eq!(
        std::fs::read_link(staged.join("link")).unwrap(),
        PathBuf::from(&target)
    );

    let pax = d.outside().join("pax.tar");
    make_tar(&pax, &[TarEntry::File(&long_name, "hello\n")], false);
    d.cmd().arg("stage").arg(&pax).args(["--id", "pax"]).ok();
    assert_eq!(
        std::fs::read(d.path("releases/pax").join(&long_name)).unwrap(),
        b"hello\n"
    );
}
