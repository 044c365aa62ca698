//! Root acts on a tree with the rights of the tree's owner (src/creds.rs),
//! shown from outside: every root operation that writes below ROOT runs
//! under `strace -f`, over an app root uid 65534 owns, and no write,
//! rename or unlink below it may be made while the thread's effective uid
//! is 0. The tree left behind belongs to its owner, to the last file.

use crate::common::{require_root, require_tool, Dir, BIN};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

const OWNER: u32 = 65534;

/// System calls that create, change or remove a name or a file's data.
const WRITES: &[&str] = &[
    "mkdir",
    "mkdirat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
    "chmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "lchown",
    "fchownat",
    "utimensat",
    "mknod",
    "mknodat",
    "truncate",
    "setxattr",
    "lsetxattr",
    "removexattr",
    "lremovexattr",
];

/// What one traced line says: the thread, the call, and the paths it names
/// (`-y` prints each fd with its path, `5</srv/web/releases>`).
struct Call<'a> {
    tid: u32,
    name: &'a str,
    line: &'a str,
}

fn parse(line: &str) -> Option<Call<'_>> {
    let (tid, rest) = line.split_once(' ')?;
    let rest = rest.trim_start();
    let name = &rest[..rest.find('(')?];
    Some(Call {
        tid: tid.parse().ok()?,
        name,
        line: rest,
    })
}

/// Whether an open asks to create or write.
fn open_writes(line: &str) -> bool {
    ["O_CREAT", "O_WRONLY", "O_RDWR", "O_TRUNC", "O_APPEND"]
        .iter()
        .any(|f| line.contains(f))
}

fn is_write(call: &Call) -> bool {
    // `utimensat(fd, NULL, …)` is futimens: it changes the inode the fd
    // was opened on (by its owner's rights then), no name.
    let fd_only = call.line.contains(">, NULL,");
    (WRITES.contains(&call.name) && !fd_only)
        || (matches!(call.name, "open" | "openat" | "openat2") && open_writes(call.line))
}

/// The writes made below `root` while their thread was root, from an
/// `strace -f -y` log that also traced the set*id calls.
fn root_writes_below(log: &str, root: &str) -> Vec<String> {
    let mut euid: HashMap<u32, u32> = HashMap::new();
    let mut found = Vec::new();
    for line in log.lines() {
        let Some(call) = parse(line) else { continue };
        if call.line.contains("<unfinished") || call.line.contains("resumed>") {
            // Split by another thread's call: judged below as unfinished.
            if !call.line.contains("<unfinished") {
                continue;
            }
        }
        if call.name == "setresuid" && call.line.ends_with("= 0") {
            // setresuid(-1, 65534, -1) = 0
            let args = &call.line["setresuid(".len()..];
            if let Some(e) = args.split(',').nth(1).and_then(|e| e.trim().parse().ok()) {
                euid.insert(call.tid, e);
            }
            continue;
        }
        let writes = is_write(&call);
        let below = call.line.contains(&format!("<{root}>"))
            || call.line.contains(&format!("<{root}/"))
            || call.line.contains(&format!("\"{root}/"));
        if writes && below && euid.get(&call.tid).copied().unwrap_or(0) == 0 {
            found.push(line.to_string());
        }
    }
    found
}

/// Run `releasectl ARGS` under strace; the log and the exit status.
fn traced(d: &Dir, args: &[&str], stdin: Option<&Path>, log: &Path) -> i32 {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-y", "-s", "256", "-o"])
        .arg(log)
        .args(["-e", "trace=%file,setresuid,setresgid"])
        .arg(BIN)
        .args(selector(d, args))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    let out = cmd.output().unwrap();
    out.status.code().unwrap_or(-1)
}

/// `--config-dir ETC` for the commands that name the app `web` (the
/// recovery needs the config's slow hook to be interrupted in), else
/// `--root ROOT`.
fn selector(d: &Dir, args: &[&str]) -> Vec<std::ffi::OsString> {
    if args.contains(&"web") {
        vec!["--config-dir".into(), d.etc().into_os_string()]
    } else {
        vec!["--root".into(), d.root().into_os_string()]
    }
}

/// Leave an interrupted activation to recover: `activate web:t1` killed
/// with SIGKILL in its post_swap hook, after `current` was swapped.
fn interrupt_an_activation(d: &Dir) {
    let marker = d.outside().join("in-post-swap");
    let mut child = Command::new(BIN)
        .arg("--config-dir")
        .arg(d.etc())
        .args(["activate", "web:t1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the post_swap hook never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        d.path(".releasectl/pending.json").exists(),
        "no intent left to recover"
    );
}

fn chown_owner(path: &Path) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg(format!("{OWNER}:{OWNER}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Names below ROOT not owned by the tree's owner (`find -not -user`).
fn not_owners(root: &Path) -> String {
    let out = Command::new("find")
        .arg(root)
        .args(["-not", "-user", &OWNER.to_string(), "-printf", "%u %p\n"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn no_root_write_below_an_owners_tree() {
    require_root("acting as the tree's owner");
    require_tool("strace");
    let d = Dir::new();
    let src = d.outside().join("src");
    std::fs::create_dir_all(src.join("storage/logs")).unwrap();
    std::fs::write(src.join("index.html"), "v\n").unwrap();
    std::fs::write(src.join("storage/logs/seed"), "seed\n").unwrap();
    std::fs::create_dir_all(d.path("releases")).unwrap();
    chown_owner(&d.root());
    d.config(
        "web",
        r#"root = "{root}"
[hooks]
post_swap = [["/bin/sh", "-c", "touch {base}/outside/in-post-swap; sleep 60"]]
"#,
    );
    // The operator's source stays root's and root-only: read as root.
    for dir in [d.outside(), src.clone(), src.join("storage")] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
    let tar = d.outside().join("app.tar");
    let made = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(made.success());

    let root = d.root().display().to_string();
    let src_s = src.display().to_string();
    let tar_s = tar.display().to_string();
    let steps: Vec<(&str, Vec<&str>, Option<&Path>)> = vec![
        (
            "stage from a directory, seeding shared/",
            vec!["stage", &src_s, "--id", "d1", "--shared-dir", "storage"],
            None,
        ),
        ("activate", vec!["activate", "d1"], None),
        (
            "stage with dedup against current",
            vec!["stage", &src_s, "--id", "d2", "--shared-dir", "storage"],
            None,
        ),
        (
            "stage from a tar",
            vec!["stage", &tar_s, "--id", "t1"],
            None,
        ),
        (
            "stage from stdin",
            vec!["stage", "-", "--id", "s1"],
            Some(tar.as_path()),
        ),
        ("activate again", vec!["activate", "d2"], None),
        ("rollback", vec!["rollback"], None),
        (
            "recover an interrupted activation",
            vec!["recover", "web"],
            None,
        ),
        ("mark-bad", vec!["mark-bad", "t1"], None),
        ("prune with a leftover", vec!["prune", "--keep", "1"], None),
    ];
    let mut findings = Vec::new();
    for (i, (what, args, stdin)) in steps.iter().enumerate() {
        if *what == "recover an interrupted activation" {
            interrupt_an_activation(&d);
        }
        if *what == "prune with a leftover" {
            // A killed stage's temp tree (pid 4194304 is above pid_max).
            std::fs::create_dir_all(d.path("releases/.stage-4194304-1/sub")).unwrap();
            std::fs::write(d.path("releases/.stage-4194304-1/sub/f"), "x").unwrap();
            chown_owner(&d.path("releases/.stage-4194304-1"));
        }
        let log = d.base().join(format!("strace-{i}.log"));
        let code = traced(&d, args, *stdin, &log);
        if code != 0 {
            findings.push(format!("{what}: exit {code}"));
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let bad = root_writes_below(&text, &root);
        // The probe must see the writes at all, or it proves nothing.
        let seen = text
            .lines()
            .filter_map(parse)
            .any(|c| is_write(&c) && c.line.contains(&root));
        if !seen {
            findings.push(format!("{what}: strace saw no write below ROOT"));
        }
        for b in bad.iter().take(5) {
            findings.push(format!("{what}: as uid 0: {b}"));
        }
    }
    if d.path("releases/.stage-4194304-1").exists() {
        findings.push("prune left a dead stage's temp tree".into());
    }
    // The records stay readable for everyone's `list` and `status`.
    let staged = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.path("releases/.staged"))
            .unwrap()
            .permissions(),
    );
    if staged & 0o7777 != 0o755 {
        findings.push(format!(
            "releases/.staged has mode {:o}, not 755",
            staged & 0o7777
        ));
    }
    let others = not_owners(&d.root());
    if !others.is_empty() {
        findings.push(format!("not the owner's:\n{others}"));
    }
    assert!(
        findings.is_empty(),
        "{} finding(s):\n{}",
        findings.len(),
        findings.join("\n")
    );
    // And it still works as a deploy: current is a release of the owner's.
    let current = std::fs::read_link(d.path("current")).unwrap();
    assert_eq!(current, Path::new("releases/d1"));
}

/// A `releases/` or `.releasectl/` an older version made as root in a
/// user's ROOT: root now writes there with the user's rights, so it says
/// how to hand it over (exit 1, one line), and changes nothing.
#[test]
#[ignore = "needs root (run as root with --include-ignored, as .ci/run does)"]
fn roots_old_directories_in_a_users_root_are_named() {
    require_root("an app root another user owns");
    for name in ["releases", ".releasectl"] {
        let d = Dir::new();
        d.releases(&["v1"]);
        chown_owner(&d.root());
        std::fs::create_dir_all(d.path(name)).unwrap();
        std::os::unix::fs::chown(d.path(name), Some(0), Some(0)).unwrap();
        let src = d.outside().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("index.html"), "v\n").unwrap();
        let before = d.tree();
        let args: &[&str] = if name == "releases" {
            &["stage", src.to_str().unwrap(), "--id", "v2"]
        } else {
            &["activate", "v1"]
        };
        let r = d.cmd().args(args).expect(1);
        let line = r.one_line_error();
        assert!(
            line.contains(&format!("chown -R {OWNER}: ")) && line.contains(name),
            "{name}: {r}"
        );
        before.assert_same(&d.tree(), &format!("{name} of root's"));
    }
}
