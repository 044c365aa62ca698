//! What operators pipe into `stage` and `deploy`: archives on stdin (each
//! format told by its first bytes), `--sha256` and `--checksums`, OpenSSH
//! signatures, `--strip-components`, and `--meta` pairs shown by `list` and
//! `status` with each release's size. Every refusal exits 2 with one line
//! and leaves the tree as it was: no release, no temp tree, no record.

use crate::common;

use common::{make_tar, require_tool, zstd, Dir, TarEntry, Tree};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// An app tree under a top-level directory, as `git archive --prefix` or a
/// release tarball ships it.
fn entries() -> Vec<TarEntry<'static>> {
    vec![
        TarEntry::Dir("app-1.0"),
        TarEntry::Dir("app-1.0/bin"),
        TarEntry::File("app-1.0/version", "1.0\n"),
        TarEntry::File("app-1.0/bin/run", "#!/bin/sh\n"),
        TarEntry::Symlink("app-1.0/current-version", "version"),
    ]
}

/// `app.tar`, `app.tar.gz` and `app.tar.zst` of `entries` in `outside/`.
fn archives(d: &Dir, entries: &[TarEntry]) -> Vec<PathBuf> {
    let tar = d.outside().join("app.tar");
    make_tar(&tar, entries, false);
    let gz = d.outside().join("app.tar.gz");
    make_tar(&gz, entries, true);
    let zst = d.outside().join("app.tar.zst");
    zstd(&tar, &zst);
    vec![tar, gz, zst]
}

#[track_caller]
fn tools() {
    require_tool("python3");
    require_tool("zstd");
}

fn sha256_of(p: &Path) -> String {
    Sha256::digest(std::fs::read(p).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// No release, temp tree or staging record besides `keep`.
fn only_releases(d: &Dir, keep: &[&str]) {
    assert_eq!(d.release_names(), keep, "releases/");
    let staged = d.path("releases/.staged");
    let mut records: Vec<String> = std::fs::read_dir(&staged)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    records.sort();
    assert_eq!(records, keep, "releases/.staged/");
}

/// Run `cmd`, require exit 2 with one stderr line holding each of
/// `needles`, and nothing changed under the test directory.
fn refused(d: &Dir, cmd: &mut common::TestCommand, needles: &[&str]) {
    let before = d.tree();
    let r = cmd.expect(2);
    let line = r.one_line_error();
    for n in needles {
        assert!(line.contains(n), "expected {n:?} in the error\n{r}");
    }
    before.assert_same(&d.tree(), &r.shown);
}

// ---- stdin and format sniffing

#[test]
fn stdin_each_format() {
    tools();
    let d = Dir::new();
    let all = archives(&d, &entries());
    for (i, a) in all.iter().enumerate() {
        let id = format!("s{i}");
        d.cmd().args(["stage", "-", "--id", &id]).stdin_file(a).ok();
        assert_eq!(
            std::fs::read_to_string(d.path(&format!("releases/{id}/app-1.0/version"))).unwrap(),
            "1.0\n",
            "{}",
            a.display()
        );
    }
    // deploy reads stdin too.
    d.cmd()
        .args(["deploy", "-", "--id", "dep", "--strip-components", "1"])
        .stdin_file(&all[2])
        .ok();
    assert_eq!(d.current_version(), "1.0");
}

#[test]
fn stdin_that_is_not_an_archive_is_refused() {
    let d = Dir::new();
    let junk = d.write("outside/junk", "just some text, not an archive\n");
    refused(
        &d,
        d.cmd().args(["stage", "-"]).stdin_file(&junk),
        &["stdin is not a tar, gzip or zstd archive"],
    );
    let empty = d.write("outside/empty", "");
    refused(
        &d,
        d.cmd().args(["stage", "-"]).stdin_file(&empty),
        &["stdin is empty"],
    );
    assert!(!d.path("releases").exists());
}

#[test]
fn files_are_told_by_their_first_bytes_not_their_names() {
    tools();
    let d = Dir::new();
    let all = archives(&d, &entries());
    // A zstd archive named .tar.gz, a gzip one named .tar, a tar named .bin.
    for (from, to, id) in [
        (&all[2], "misnamed.tar.gz", "z"),
        (&all[1], "misnamed.tar", "g"),
        (&all[0], "misnamed.bin", "t"),
    ] {
        let p = d.outside().join(to);
        std::fs::copy(from, &p).unwrap();
        d.cmd().arg("stage").arg(&p).args(["--id", id]).ok();
        assert!(d.path(&format!("releases/{id}/app-1.0/bin/run")).is_file());
    }
    let text = d.write("outside/notes.tar.gz", "not gzip at all\n");
    let r = d.cmd().arg("stage").arg(&text).expect(2);
    assert!(r.one_line_error().contains("archive refused"), "{r}");
}

// ---- --sha256 and --checksums

#[test]
fn sha256_good_and_bad() {
    tools();
    let d = Dir::new();
    let all = archives(&d, &entries());
    for (i, a) in all.iter().enumerate() {
        let good = sha256_of(a);
        d.cmd()
            .arg("stage")
            .arg(a)
            .args(["--id", &format!("ok{i}"), "--sha256", &good.to_uppercase()])
            .ok();
    }
    let ok = ["ok0", "ok1", "ok2"];
    only_releases(&d, &ok);
    for a in &all {
        let wrong = "0".repeat(64);
        refused(
            &d,
            d.cmd().arg("stage").arg(a).args(["--sha256", &wrong]),
            &["SHA-256", "does not match", &wrong, "--sha256"],
        );
        // Also from stdin, and with deploy (current stays).
        refused(
            &d,
            d.cmd()
                .args(["stage", "-", "--sha256", &wrong])
                .stdin_file(a),
            &["stdin: SHA-256", "does not match"],
        );
        refused(
            &d,
            d.cmd().arg("deploy").arg(a).args(["--sha256", &wrong]),
            &["does not match"],
        );
    }
    only_releases(&d, &ok);
    // Good from stdin.
    d.cmd()
        .args(["stage", "-", "--id", "in", "--sha256", &sha256_of(&all[1])])
        .stdin_file(&all[1])
        .ok();
}

#[test]
fn a_bad_hash_on_the_first_stage_leaves_no_releases_dir() {
    tools();
    let d = Dir::new();
    let all = archives(&d, &entries());
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(&all[2])
            .args(["--sha256", &"f".repeat(64)]),
        &["does not match"],
    );
    assert!(!d.path("releases").exists());
}

#[test]
fn a_cut_short_upload_is_named_as_a_hash_mismatch() {
    tools();
    let d = Dir::new();
    let all = archives(&d, &entries());
    let whole = std::fs::read(&all[1]).unwrap();
    let cut = d.outside().join("cut.tar.gz");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(&cut)
            .args(["--sha256", &sha256_of(&all[1])]),
        &["does not match"],
    );
}

#[test]
fn malformed_sha256_is_refused() {
    let d = Dir::new();
    let src = d.write("outside/src/version", "x\n");
    let src = src.parent().unwrap();
    for bad in ["abc", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
        refused(
            &d,
            d.cmd().arg("stage").arg(src).args(["--sha256", bad]),
            &["--sha256", "64 hex digits"],
        );
    }
    // A directory has no bytes to hash.
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(src)
            .args(["--sha256", &"0".repeat(64)]),
        &["--sha256 applies to archives", "is a directory"],
    );
}

#[test]
fn checksums_good_bad_and_missing_entry() {
    tools();
    let d = Dir::new();
    let all = archives(&d, &entries());
    let sums = d.outside().join("SHA256SUMS");
    std::fs::write(
        &sums,
        format!(
            "{}  app.tar\n{} *app.tar.gz\n{}  other.tar.zst\n",
            sha256_of(&all[0]),
            sha256_of(&all[1]),
            "1".repeat(64),
        ),
    )
    .unwrap();
    for (a, id) in [(&all[0], "t"), (&all[1], "g")] {
        d.cmd()
            .arg("stage")
            .arg(a)
            .args(["--id", id, "--checksums"])
            .arg(&sums)
            .ok();
    }
    only_releases(&d, &["g", "t"]);

    // No entry for app.tar.zst.
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(&all[2])
            .arg("--checksums")
            .arg(&sums),
        &["no entry for app.tar.zst"],
    );
    // An entry that does not match.
    std::fs::write(&sums, format!("{}  app.tar.zst\n", "2".repeat(64))).unwrap();
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(&all[2])
            .arg("--checksums")
            .arg(&sums),
        &[
            "does not match",
            &"2".repeat(64),
            "SHA256SUMS (app.tar.zst)",
        ],
    );
    // A line that is not in the format.
    std::fs::write(&sums, format!("{} app.tar.zst\n", sha256_of(&all[2]))).unwrap();
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(&all[2])
            .arg("--checksums")
            .arg(&sums),
        &["SHA256SUMS:1", "not a `HEX  NAME`"],
    );
    // Stdin has no name to look up.
    refused(
        &d,
        d.cmd()
            .args(["stage", "-", "--checksums"])
            .arg(&sums)
            .stdin_file(&all[2]),
        &["stdin has none"],
    );
    // A missing checksums file.
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(&all[2])
            .arg("--checksums")
            .arg(d.outside().join("nope")),
        &["--checksums", "nope"],
    );
    only_releases(&d, &["g", "t"]);
}

// ---- signatures

struct Signer {
    key: PathBuf,
    allowed: PathBuf,
}

/// An ed25519 key and an allowed-signers file naming it `ci@example` for
/// the namespace releasectl.
fn signer(d: &Dir) -> Signer {
    require_tool("ssh-keygen");
    let key = d.outside().join("key");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ci@example", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut words = public.split_whitespace();
    let (kind, blob) = (words.next().unwrap(), words.next().unwrap());
    let allowed = d.outside().join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("ci@example namespaces=\"releasectl\" {kind} {blob}\n"),
    )
    .unwrap();
    Signer { key, allowed }
}

impl Signer {
    /// `ssh-keygen -Y sign` of `file` in `namespace`; returns FILE.sig.
    fn sign(&self, file: &Path, namespace: &str) -> PathBuf {
        let sig = PathBuf::from(format!("{}.sig", file.display()));
        let _ = std::fs::remove_file(&sig);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-f"])
            .arg(&self.key)
            .args(["-n", namespace])
            .arg(file)
            .status()
            .unwrap();
        assert!(ok.success());
        sig
    }
}

#[test]
fn signature_good_bad_missing_and_wrong_identity() {
    tools();
    let d = Dir::new();
    let s = signer(&d);
    let all = archives(&d, &entries());
    let zst = &all[2];
    let sig = s.sign(zst, "releasectl");
    let check = |c: &mut common::TestCommand| {
        c.arg("--signature")
            .arg(&sig)
            .arg("--allowed-signers")
            .arg(&s.allowed);
    };

    // Good: with the identity the file names, and without one.
    let mut c = d.cmd();
    c.arg("stage").arg(zst).args(["--id", "signed"]);
    check(&mut c);
    c.ok();
    let mut c = d.cmd();
    c.arg("stage")
        .arg(zst)
        .args(["--id", "who", "--signer-identity", "ci@example"]);
    check(&mut c);
    c.ok();
    // Good, from stdin: the signature is checked on the bytes unpacked.
    let mut c = d.cmd();
    c.args(["stage", "-", "--id", "piped"]).stdin_file(zst);
    check(&mut c);
    c.ok();
    let ok = ["piped", "signed", "who"];
    only_releases(&d, &ok);

    // Wrong identity.
    let mut c = d.cmd();
    c.arg("stage")
        .arg(zst)
        .args(["--signer-identity", "mallory@example"]);
    check(&mut c);
    refused(&d, &mut c, &["does not verify for mallory@example"]);

    // Another archive than the one signed (same name, other bytes).
    let other = d.outside().join("other");
    std::fs::create_dir(&other).unwrap();
    let swapped = other.join("app.tar.zst");
    let mut e = entries();
    e.push(TarEntry::File("app-1.0/backdoor", "x"));
    let tar = other.join("app.tar");
    make_tar(&tar, &e, false);
    zstd(&tar, &swapped);
    let mut c = d.cmd();
    c.arg("stage").arg(&swapped);
    check(&mut c);
    refused(&d, &mut c, &["does not verify"]);
    let mut c = d.cmd();
    c.args(["stage", "-"]).stdin_file(&swapped);
    check(&mut c);
    refused(&d, &mut c, &["stdin: signature", "does not verify"]);

    // Signed for another namespace.
    let copy = other.join("copy.tar.zst");
    std::fs::copy(zst, &copy).unwrap();
    let git = s.sign(&copy, "git");
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(zst)
            .arg("--signature")
            .arg(&git)
            .arg("--allowed-signers")
            .arg(&s.allowed),
        &["does not verify"],
    );

    // A damaged signature file.
    let damaged = other.join("damaged.sig");
    let text = std::fs::read_to_string(&sig).unwrap();
    std::fs::write(&damaged, text.replacen("AAAA", "BBBB", 1)).unwrap();
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(zst)
            .arg("--signature")
            .arg(&damaged)
            .arg("--allowed-signers")
            .arg(&s.allowed),
        &["signature"],
    );

    // A missing signature file, and a signature without allowed signers.
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(zst)
            .arg("--signature")
            .arg(other.join("nope.sig"))
            .arg("--allowed-signers")
            .arg(&s.allowed),
        &["--signature", "nope.sig"],
    );
    refused(
        &d,
        d.cmd().arg("stage").arg(zst).arg("--signature").arg(&sig),
        &["--signature needs --allowed-signers"],
    );
    only_releases(&d, &ok);
}

/// The signature files are opened once: a FIFO exchanged into the
/// signature's name while `stage` runs (someone who may write the directory
/// it lies in) is either seen, and refused, or never read. Before, the name
/// was checked and then handed to ssh-keygen, which could open the FIFO
/// and wait on it for ever. Judged over many tries, each bounded.
#[test]
fn a_fifo_exchanged_for_the_signature_never_hangs_stage() {
    tools();
    let d = Dir::new();
    let s = signer(&d);
    let zst = archives(&d, &entries())[2].clone();
    let sig = s.sign(&zst, "releasectl");
    let fifo = d.outside().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // A FIFO named as the signature outright is refused at once.
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(&zst)
            .arg("--signature")
            .arg(&fifo)
            .arg("--allowed-signers")
            .arg(&s.allowed),
        &["--signature", "not a regular file"],
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let (stop, sig, fifo) = (stop.clone(), sig.clone(), fifo.clone());
        std::thread::spawn(move || {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = renameat_with(CWD, &sig, CWD, &fifo, RenameFlags::EXCHANGE);
            }
        })
    };
    let (mut staged, mut refusals, mut hangs) = (0, 0, 0);
    for i in 0..40 {
        let out = Command::new("timeout")
            .args(["10", common::BIN])
            .arg("--root")
            .arg(d.root())
            .arg("stage")
            .arg(&zst)
            .args(["--id", &format!("r{i}")])
            .arg("--signature")
            .arg(&sig)
            .arg("--allowed-signers")
            .arg(&s.allowed)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        match out.status.code() {
            Some(0) => staged += 1,
            Some(2) => refusals += 1,
            Some(124) => hangs += 1,
            other => panic!(
                "stage exited {other:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racer.join().unwrap();
    eprintln!("fifo race: {staged} staged, {refusals} refused, {hangs} hung");
    assert_eq!(hangs, 0, "stage waited on the FIFO {hangs} times of 40");
    assert!(refusals > 0, "the racer never won: the test proves nothing");
}

#[test]
fn config_requires_signatures() {
    tools();
    let d = Dir::new();
    let s = signer(&d);
    let all = archives(&d, &entries());
    let zst = &all[2];
    d.config(
        "web",
        &format!(
            "root = \"{{root}}\"\n[stage]\nallowed_signers = \"{}\"\nrequire_signature = true\nsigner_identity = \"ci@example\"\n",
            s.allowed.display()
        ),
    );
    // Unsigned: refused, archive or directory.
    refused(
        &d,
        d.cmd_config().arg("stage").arg(zst),
        &["requires a signed archive"],
    );
    let src = d.write("outside/src/version", "x\n");
    refused(
        &d,
        d.cmd_config().arg("stage").arg(src.parent().unwrap()),
        &["requires a signed archive"],
    );
    // Signed: the config's allowed signers and identity are used.
    let sig = s.sign(zst, "releasectl");
    d.cmd_config()
        .arg("deploy")
        .arg(zst)
        .args(["--id", "v1", "--strip-components", "1", "--signature"])
        .arg(&sig)
        .ok();
    assert_eq!(d.current_version(), "1.0");
    // The flag overrides the config's identity.
    refused(
        &d,
        d.cmd_config()
            .arg("stage")
            .arg(zst)
            .args(["--signer-identity", "other@example", "--signature"])
            .arg(&sig),
        &["does not verify for other@example"],
    );
}

#[test]
fn bad_stage_config_keys_are_refused() {
    let d = Dir::new();
    for (body, needle) in [
        ("[stage]\nallowed_signers = \"relative\"\n", "absolute"),
        (
            "[stage]\nrequire_signature = true\n",
            "needs stage.allowed_signers",
        ),
        ("[stage]\nsigner_identity = \"\"\n", "stage.signer_identity"),
        ("[stage]\nunknown = 1\n", "unknown"),
    ] {
        d.config("web", &format!("root = \"{{root}}\"\n{body}"));
        let src = d.write("outside/src/version", "x\n");
        refused(
            &d,
            d.cmd_config().arg("stage").arg(src.parent().unwrap()),
            &["web.toml", needle],
        );
    }
}

// ---- --strip-components

#[test]
fn strip_components_with_hard_links_and_vanishing_entries() {
    tools();
    let d = Dir::new();
    let tar = d.outside().join("app.tar");
    make_tar(
        &tar,
        &[
            // Top-level entries with no more than one component vanish.
            TarEntry::File("README", "top-level, stripped away\n"),
            TarEntry::Dir("app-1.0"),
            TarEntry::File("app-1.0/version", "1.0\n"),
            TarEntry::Dir("app-1.0/bin"),
            TarEntry::File("app-1.0/bin/run", "#!/bin/sh\n"),
            TarEntry::Hardlink("app-1.0/bin/again", "app-1.0/bin/run"),
            TarEntry::Symlink("app-1.0/link", "version"),
        ],
        false,
    );
    d.cmd()
        .arg("stage")
        .arg(&tar)
        .args(["--id", "s", "--strip-components", "1"])
        .ok();
    let rel = d.path("releases/s");
    let mut names: Vec<String> = Tree::of(&rel).0.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["bin", "bin/again", "bin/run", "link", "version"]);
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(rel.join("bin/run")).unwrap(),
        std::fs::metadata(rel.join("bin/again")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "the hard link's target is stripped too");
    assert_eq!(
        std::fs::read_link(rel.join("link")).unwrap(),
        Path::new("version")
    );
    // `verify` agrees with what was recorded.
    d.cmd().args(["verify", "s"]).ok();

    // ./ counts as a component, as in GNU tar.
    let dotted = d.outside().join("dotted.tar");
    make_tar(
        &dotted,
        &[
            TarEntry::Dir("./app-1.0"),
            TarEntry::File("./app-1.0/version", "dot\n"),
        ],
        false,
    );
    d.cmd()
        .arg("stage")
        .arg(&dotted)
        .args(["--id", "dot", "--strip-components", "2"])
        .ok();
    assert_eq!(
        std::fs::read_to_string(d.path("releases/dot/version")).unwrap(),
        "dot\n"
    );

    // A hard link whose target is stripped away is refused.
    let lost = d.outside().join("lost.tar");
    make_tar(
        &lost,
        &[
            TarEntry::File("README", "x\n"),
            TarEntry::Dir("app-1.0"),
            TarEntry::Hardlink("app-1.0/README", "README"),
        ],
        false,
    );
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(&lost)
            .args(["--strip-components", "1"]),
        &["hard link README", "stripped away"],
    );
    // Nothing left at all.
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(&tar)
            .args(["--strip-components", "3"]),
        &["nothing is left after --strip-components 3"],
    );
    // A directory has no entry names to strip.
    let src = d.write("outside/src/version", "x\n");
    refused(
        &d,
        d.cmd()
            .arg("stage")
            .arg(src.parent().unwrap())
            .args(["--strip-components", "1"]),
        &["--strip-components applies to archives"],
    );
}

// ---- --meta and sizes

#[test]
fn meta_and_size_in_list_and_status() {
    let d = Dir::new();
    let src = d.outside().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("version"), "12345\n").unwrap(); // 6 bytes
    std::fs::write(src.join("sub/data"), "x".repeat(2000)).unwrap();
    d.cmd()
        .arg("deploy")
        .arg(&src)
        .args([
            "--id",
            "v1",
            "--meta",
            "git=0123abc",
            "--meta",
            "build.url=https://ci.example/job/7",
            "--meta",
            "by=Alice Doe",
        ])
        .ok();
    d.release("hand"); // put in place by other means: no record

    let list = d.cmd().args(["--json", "list"]).ok().json();
    let rels = list["releases"].as_array().unwrap();
    let v1 = rels.iter().find(|r| r["id"] == "v1").unwrap();
    assert_eq!(v1["size"], 2006, "{list}");
    assert_eq!(v1["meta"]["git"], "0123abc");
    assert_eq!(v1["meta"]["build.url"], "https://ci.example/job/7");
    assert_eq!(v1["meta"]["by"], "Alice Doe");
    let hand = rels.iter().find(|r| r["id"] == "hand").unwrap();
    assert!(hand["size"].is_null(), "{list}");
    assert_eq!(hand["meta"], serde_json::json!({}));

    let text = d.cmd().arg("list").ok().stdout;
    let line = text.lines().find(|l| l.starts_with("v1 ")).unwrap();
    for want in [
        "2.0 KiB",
        "current",
        "git=0123abc",
        "build.url=https://ci.example/job/7",
        "by=\"Alice Doe\"",
    ] {
        assert!(line.contains(want), "{want:?} in {line:?}");
    }
    let line = text.lines().find(|l| l.starts_with("hand ")).unwrap();
    assert!(line.ends_with(" -"), "unknown size: {line:?}");

    let status = d.cmd().args(["--json", "status"]).ok().json();
    assert_eq!(status["meta"]["git"], "0123abc", "{status}");
    let text = d.cmd().arg("status").ok().stdout;
    assert!(
        text.contains("meta:      build.url=https://ci.example/job/7 by=\"Alice Doe\" git=0123abc"),
        "{text}"
    );

    // The history says what was activated with which pairs.
    let history = d.cmd().args(["--json", "history"]).ok().json();
    let last = history["entries"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["to"], "v1", "{last}");
    assert_eq!(last["meta"]["git"], "0123abc", "{last}");
    let text = d.cmd().args(["history", "-n", "1"]).ok().stdout;
    assert!(
        text.contains("v1 activated (the first) {build.url=https://ci.example/job/7 by=\"Alice Doe\" git=0123abc}"),
        "{text}"
    );

    // Without a current release, status's meta is null.
    let e = Dir::new();
    e.release("x");
    assert!(e.cmd().args(["--json", "status"]).ok().json()["meta"].is_null());
}

#[test]
fn meta_read_back_is_held_to_the_rules() {
    let d = Dir::new();
    let src = d.write("outside/src/version", "x\n");
    d.cmd()
        .arg("stage")
        .arg(src.parent().unwrap())
        .args(["--id", "v1", "--meta", "ok=yes"])
        .ok();
    // The deploy user edits the record: a control character, a bad key.
    let rec = d.path("releases/.staged/v1");
    let text = std::fs::read_to_string(&rec).unwrap();
    let edited = text.replacen(
        "\"meta\":{",
        "\"meta\":{\"BAD KEY\":\"x\",\"esc\":\"\\u001b[31mred\",",
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(&rec, edited).unwrap();
    let list = d.cmd().args(["--json", "list"]).ok().json();
    assert_eq!(
        list["releases"][0]["meta"],
        serde_json::json!({"ok": "yes"}),
        "{list}"
    );
    // A record that does not parse leaves size and meta unknown.
    std::fs::write(&rec, "not json\n").unwrap();
    let list = d.cmd().args(["--json", "list"]).ok().json();
    assert!(list["releases"][0]["size"].is_null(), "{list}");
}

#[test]
fn bad_meta_is_refused() {
    let d = Dir::new();
    let src = d.write("outside/src/version", "x\n");
    let src = src.parent().unwrap();
    let long = format!("k={}", "v".repeat(1025));
    let long_key = format!("{}=v", "k".repeat(65));
    for (pairs, needle) in [
        (vec!["novalue"], "expected KEY=VALUE"),
        (vec!["=v"], "the key must be"),
        (vec!["Git=x"], "the key must be"),
        (vec!["a b=c"], "the key must be"),
        (vec![long_key.as_str()], "the key must be"),
        (vec!["k=line\nbreak"], "control character"),
        (vec!["k=tab\there"], "control character"),
        (vec![long.as_str()], "longer than 1024 bytes"),
        (vec!["k=1", "k=2"], "given twice"),
    ] {
        let mut c = d.cmd();
        c.arg("stage").arg(src);
        for p in &pairs {
            c.args(["--meta", p]);
        }
        refused(&d, &mut c, &["--meta", needle]);
        let mut c = d.cmd();
        c.arg("deploy").arg(src);
        for p in &pairs {
            c.args(["--meta", p]);
        }
        refused(&d, &mut c, &["--meta", needle]);
    }
    assert!(!d.path("releases").exists());
}
