//! Archives and sources that must not carry privileges or be half staged:
//! setuid/setgid bits and foreign owners, archives refused whole.

use super::*;
use common::{make_tar_from, TarOptions};

// 10. setuid and setgid bits, foreign owners

/// A 4755 and a 2755 file and a 2755 directory, in a directory source owned
/// by the attacker and in .tar/.tar.gz/.tar.zst archives whose entries
/// belong to uid/gid 12345: after staging nothing under ROOT has a setuid or
/// setgid bit, and nothing belongs to 12345 (root or ROOT's owner only).
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn setid_bits_and_owners_are_not_staged() {
    root_ready(&["zstd", "python3"]);
    let s = Scene::new();
    s.release("v0", 0, 0);
    s.to_attacker();
    // The directory source: the attacker's, bits set after the chown
    // (a chown clears them).
    let tree = s.src().join("tree");
    fs::create_dir_all(tree.join("sgdir")).unwrap();
    fs::write(tree.join("su"), "#!/bin/sh\nid\n").unwrap();
    fs::write(tree.join("sg"), "#!/bin/sh\nid\n").unwrap();
    fs::write(tree.join("sgdir/f"), "in a setgid dir\n").unwrap();
    chown_tree(&tree);
    for (p, mode) in [("su", 0o4755), ("sg", 0o2755), ("sgdir", 0o2755)] {
        fs::set_permissions(tree.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    let entries = json!([
        {"name": "sgdir", "type": "dir", "mode": 0o2755, "uid": 12345, "gid": 12345},
        {"name": "sgdir/f", "type": "file", "mode": 0o644, "uid": 12345, "gid": 12345, "data": "f\n"},
        {"name": "su", "type": "file", "mode": 0o4755, "uid": 12345, "gid": 12345, "data": "#!/bin/sh\n"},
        {"name": "sg", "type": "file", "mode": 0o2755, "uid": 12345, "gid": 12345, "data": "#!/bin/sh\n"},
        {"name": "both", "type": "file", "mode": 0o6755, "uid": 0, "gid": 0, "data": "#!/bin/sh\n"},
    ]);
    let tar = s.src().join("app.tar");
    make_tar_from(&tar, entries.clone(), &TarOptions::default());
    let tgz = s.src().join("app.tar.gz");
    let gzip = TarOptions {
        gzip: true,
        ..TarOptions::default()
    };
    make_tar_from(&tgz, entries, &gzip);
    let tzst = s.src().join("app.tar.zst");
    zstd(&tar, &tzst);
    let mut f = Findings::default();
    for (i, src) in [tree, tar, tgz, tzst].iter().enumerate() {
        let id = format!("x{i}");
        match s.rctl().arg("stage").arg(src).args(["--id", &id]).try_run() {
            Err(e) => f.add(e),
            Ok(r) => {
                f.check(
                    r.code == Some(0) || (r.code == Some(2) && one_line(&r).is_some()),
                    || format!("neither staged nor refused in one line: {}", brief(&r)),
                );
                let rel = s.path("releases").join(&id);
                for found in setid_files(&rel) {
                    f.add(format!(
                        "{}: staged with a setuid/setgid bit: {found}",
                        src.display()
                    ));
                }
                let mut stack = vec![rel];
                while let Some(p) = stack.pop() {
                    let Ok(m) = fs::symlink_metadata(&p) else {
                        continue;
                    };
                    if m.uid() == 12345 || m.gid() == 12345 || ![0, ATTACKER].contains(&m.uid()) {
                        f.add(format!(
                            "{}: {} belongs to {}:{}",
                            src.display(),
                            p.display(),
                            m.uid(),
                            m.gid()
                        ));
                    }
                    if m.is_dir() {
                        stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                    }
                }
            }
        }
    }
    for found in setid_files(&s.root()) {
        f.add(format!("find ROOT -perm /6000: {found}"));
    }
    f.done("setuid/setgid staging");
}

// 11. Archives that must be refused

/// Archives with a character device, a FIFO, no entries at all, cut inside
/// an entry, and cut exactly at an entry boundary (no end-of-archive
/// blocks), as .tar and (the truncated ones) .tar.gz and .tar.zst, also with
/// the compressed stream itself cut: exit 2, one stderr line, and the tree
/// (releases/ included: no .stage-* leftovers) exactly as before.
#[test]
fn bad_archives_are_refused_whole() {
    tools_ready(&["python3", "zstd"]);
    let s = Scene::new();
    s.release("v1", 0, 0);
    if is_root() {
        s.to_attacker();
    }
    let ok = json!({"name": "ok.txt", "type": "file", "data": "fine\n"});
    let big = json!({"name": "big.bin", "type": "file", "data": "z".repeat(4000)});
    let src = s.src();
    let mut cases: Vec<PathBuf> = Vec::new();
    let mut add = |name: &str, entries: Value, cut: Option<&str>, gz: bool, cut_stream: bool| {
        let p = src.join(name);
        let opts = TarOptions {
            cut,
            gzip: gz,
            cut_stream,
        };
        make_tar_from(&p, entries, &opts);
        cases.push(p);
    };
    add(
        "chr.tar",
        json!([ok, {"name": "null2", "type": "chr", "mode": 0o666}]),
        None,
        false,
        false,
    );
    add(
        "fifo.tar",
        json!([ok, {"name": "pipe", "type": "fifo", "mode": 0o644}]),
        None,
        false,
        false,
    );
    add("empty.tar", json!([]), None, false, false);
    add("cut-mid.tar", json!([ok, big]), Some("mid"), false, false);
    add(
        "cut-boundary.tar",
        json!([ok, big]),
        Some("boundary"),
        false,
        false,
    );
    add("cut-mid.tar.gz", json!([ok, big]), Some("mid"), true, false);
    add(
        "cut-boundary.tar.gz",
        json!([ok, big]),
        Some("boundary"),
        true,
        false,
    );
    add("cut-stream.tar.gz", json!([ok, big]), None, true, true);
    add("empty.tar.gz", json!([]), None, true, false);
    add(
        "chr.tar.gz",
        json!([ok, {"name": "null2", "type": "chr"}]),
        None,
        true,
        false,
    );
    for (from, to, cut_half) in [
        ("cut-mid.tar", "cut-mid.tar.zst", false),
        ("cut-boundary.tar", "cut-boundary.tar.zst", false),
        ("chr.tar", "cut-stream.tar.zst", true),
    ] {
        let out = src.join(to);
        zstd(&src.join(from), &out);
        if cut_half {
            let len = fs::metadata(&out).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&out)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }
        cases.push(out);
    }
    let mut f = Findings::default();
    for archive in &cases {
        let before = Tree::of(&s.root());
        let r = s
            .rctl()
            .arg("stage")
            .arg(archive)
            .args(["--id", "bad"])
            .try_run();
        let mut sub = Findings::default();
        expect_refusal(&mut sub, &r, 2, &[]);
        for x in sub.0 {
            f.add(format!("{}: {x}", archive.display()));
        }
        let after = Tree::of(&s.root());
        if before != after {
            let extra: Vec<&String> = after
                .0
                .keys()
                .filter(|k| !before.0.contains_key(*k))
                .collect();
            f.add(format!(
                "{}: the tree changed; new: {extra:?}",
                archive.display()
            ));
            let _ = fs::remove_dir_all(s.path("releases/bad"));
        }
    }
    f.done("bad archives");
}
