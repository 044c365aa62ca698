//! A throwaway systemd host for tests: systemd as PID 1 in `systemd-nspawn`,
//! booted over a tmpfs-backed overlay of this machine's own root, so every
//! package installed here (nginx, python3, …) is there too and nothing written
//! inside ever reaches the real disk: the overlay is what makes the container
//! cheap (no image to build) and what keeps a test from leaving anything behind.
//!
//! Self-contained (std only) so other test targets can pull it in with
//! `#[path = "systemd/nspawn.rs"] mod nspawn;`.
//!
//! ```ignore
//! let mut c = nspawn::Container::create_checked("pkg", Options::default());
//! std::fs::write(c.path("/etc/motd"), "hi")?;   // before (or after) boot, through the overlay
//! c.boot();
//! c.sh("systemctl is-active dbus.service");       // panics with stdout/stderr if it fails
//! // dropped (also on panic): PID 1 killed, nspawn reaped, overlay and tmpfs unmounted
//! ```
//!
//! Prerequisites are root, `systemd-nspawn`, `nsenter`, `setpriv` and
//! overlayfs. Without them [`Container::create_checked`] fails the test
//! naming what is missing: the tests that boot containers are `#[ignore]`d,
//! so they run only when asked for (`--include-ignored`), and then a missing
//! prerequisite is an error, not a skip.
//!
//! A container may outlive every test that uses it (a suite shares one
//! through a `static`, which is never dropped). It still dies with the test
//! process: systemd-nspawn is started with a parent-death signal from a
//! thread that lives as long as the process, and a watchdog unmounts the
//! overlay when the process is gone. Whatever a killed run still leaves
//! behind in /run/rctl-test is removed by the next [`Container::create`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Where the overlays live: /run is a tmpfs on the host, so even a leaked
/// mount goes away with a reboot.
const BASE_DIR: &str = "/run/rctl-test";

/// The environment of every command run inside. Commands are started with
/// `env -i` so nothing from the test process (CARGO_*, RUST_*, a pager)
/// leaks into the container.
const INNER_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "TERM=dumb",
    "SYSTEMD_PAGER=",
    "SYSTEMD_COLORS=0",
];

#[derive(Debug, Clone)]
pub struct Options {
    /// `--private-network`: the container gets its own loopback only. Keeps
    /// ports from clashing with the host and with other containers (the host
    /// image starts PostgreSQL and nginx at boot).
    pub private_network: bool,
    /// Units masked before boot (linked to /dev/null) so boot stays quick and
    /// does not fight other containers for ports.
    pub mask: Vec<String>,
    /// `--bind-ro=HOST:INSIDE` pairs.
    pub bind_ro: Vec<(PathBuf, PathBuf)>,
    /// How long boot may take before the test gives up. A guard against a
    /// hang, not a measurement: it is generous on purpose.
    pub boot_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            private_network: true,
            // ssh: the machine has openssh-server for the fleet hosts
            // (tests/it/fleet), which enable it on their own ports; anywhere
            // else it would only slow boot down.
            mask: vec![
                "postgresql.service".into(),
                "postgresql@.service".into(),
                "ssh.service".into(),
                "ssh.socket".into(),
                // Installed for the operator's journey (tests/it/journey.rs),
                // which unmasks it; elsewhere it would only slow boot down.
                "php8.2-fpm.service".into(),
            ],
            bind_ro: Vec::new(),
            boot_timeout: Duration::from_secs(180),
        }
    }
}

/// Why system tests cannot run here, if they cannot.
pub fn missing_prerequisites() -> Option<String> {
    if !Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
    {
        return Some("not running as root".into());
    }
    for tool in ["systemd-nspawn", "nsenter", "setpriv", "mount", "umount"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    let fs = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.ends_with("\toverlay")) {
        // The module may still load on first mount; only say so if it cannot.
        let _ = Command::new("modprobe").arg("overlay").status();
        let fs = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fs.lines().any(|l| l.ends_with("\toverlay")) {
            return Some("the kernel has no overlayfs".into());
        }
    }
    None
}

/// Fail the test unless system tests can run here, naming what is missing.
#[track_caller]
pub fn require_prerequisites(what: &str) {
    if let Some(why) = missing_prerequisites() {
        crate::common::missing(&format!("{what}: {why}"));
    }
}

/// One container. Dropping it always tears everything down.
pub struct Container {
    name: String,
    base: PathBuf,
    root: PathBuf,
    opts: Options,
    nspawn: Option<Child>,
    leader: Option<u32>,
    mounted_base: bool,
    mounted_root: bool,
    /// Unmounts the overlay if the test process dies with the container
    /// still up (see [`Container::watchdog`]).
    watchdog: Option<Child>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Container {
    /// [`require_prerequisites`] and then [`Container::create`].
    #[track_caller]
    pub fn create_checked(prefix: &str, opts: Options) -> Container {
        require_prerequisites(prefix);
        Container::create(prefix, opts)
    }

    /// Mount the overlay; the container is not booted yet, so files can be
    /// put in place through [`Container::path`] first. The machine name is
    /// `PREFIX-PID-N`, unique among concurrent test processes.
    pub fn create(prefix: &str, opts: Options) -> Container {
        remove_leftovers();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        assert!(name.len() <= 64, "machine name {name} too long");
        let base = Path::new(BASE_DIR).join(&name);
        let mut c = Container {
            root: base.join("root"),
            base,
            name,
            opts,
            nspawn: None,
            leader: None,
            mounted_base: false,
            mounted_root: false,
            watchdog: None,
        };
        fs::create_dir_all(&c.base).expect("create overlay base");
        run_host(&["mount", "-t", "tmpfs", "tmpfs", &c.base.to_string_lossy()]);
        c.mounted_base = true;
        for d in ["upper", "work", "root"] {
            fs::create_dir(c.base.join(d)).expect("create overlay dirs");
        }
        let options = format!(
            "lowerdir=/,upperdir={},workdir={}",
            c.base.join("upper").display(),
            c.base.join("work").display()
        );
        run_host(&[
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            &options,
            &c.root.to_string_lossy(),
        ]);
        c.mounted_root = true;
        c.watchdog = Some(c.watchdog());
        for unit in c.opts.mask.clone() {
            c.mask(&unit);
        }
        c
    }

    /// A shell that waits for end of file on its stdin, whose only writer is
    /// this process: when the process is gone (a static container is never
    /// dropped; a run may be killed), it unmounts the overlay, retrying while
    /// nspawn, told by its parent-death signal, takes the container down.
    /// [`Drop`] writes `done` first, having cleaned up itself.
    fn watchdog(&self) -> Child {
        let script = r#"trap '' INT TERM HUP
read -r line
[ "$line" = done ] && exit 0
for i in $(seq 100); do umount "$1" 2>/dev/null && break; sleep 0.1; done
mountpoint -q "$1" && umount -l "$1"
umount "$2" 2>/dev/null || umount -l "$2"
rmdir "$2""#;
        Command::new("sh")
            .args(["-c", script, "rctl-watchdog"])
            .arg(&self.root)
            .arg(&self.base)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the container's watchdog")
    }

    /// Whether the container is running (booted and not powered off).
    pub fn is_booted(&self) -> bool {
        self.nspawn.is_some()
    }

    /// The host path of `inside` (an absolute path in the container). Writes
    /// there are seen inside, before and after boot, except under the
    /// container's own tmpfs mounts (/tmp, /run, /dev).
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// Write a file through the overlay, creating parent directories.
    pub fn write(&self, inside: &str, content: impl AsRef<[u8]>) {
        let p = self.path(inside);
        fs::create_dir_all(p.parent().expect("absolute path")).expect("create parent dirs");
        fs::write(&p, content).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    }

    /// Link `unit` to /dev/null in /etc/systemd/system (before boot, or
    /// followed by a daemon-reload).
    pub fn mask(&self, unit: &str) {
        let dir = self.path("/etc/systemd/system");
        fs::create_dir_all(&dir).expect("create /etc/systemd/system");
        let link = dir.join(unit);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).expect("mask unit");
    }

    /// Boot systemd as PID 1 and wait until `is-system-running` says
    /// running or degraded.
    pub fn boot(&mut self) {
        assert!(self.nspawn.is_none(), "{} is already booted", self.name);
        let console = fs::File::create(self.base.join("console.log")).expect("console log");
        // SIGTERM when the process that started nspawn is gone, and
        // nspawn then kills PID 1 (which would outlive a killed nspawn).
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "SIGTERM", "--", "systemd-nspawn", "-D"])
            .arg(&self.root)
            .args(["--boot", "--register=no", "--keep-unit", "--console=pipe"])
            .arg("--kill-signal=SIGKILL")
            .arg(format!("--machine={}", self.name));
        if self.opts.private_network {
            cmd.arg("--private-network");
        }
        for (host, inside) in &self.opts.bind_ro {
            cmd.arg(format!("--bind-ro={}:{}", host.display(), inside.display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(console.try_clone().expect("dup console log"))
            .stderr(console);
        let child = spawn_from_lasting_thread(cmd).expect("start systemd-nspawn");
        let nspawn_pid = child.id();
        self.nspawn = Some(child);

        let deadline = Instant::now() + self.opts.boot_timeout;
        let leader = loop {
            if let Some(pid) = namespace_init_child_of(nspawn_pid) {
                break pid;
            }
            self.assert_nspawn_alive();
            assert!(
                Instant::now() < deadline,
                "{}: no PID 1 appeared",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.leader = Some(leader);
        loop {
            let out = self.run("systemctl is-system-running");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match state.as_str() {
                "running" => break,
                "degraded" => {
                    eprintln!(
                        "{}: booted degraded:\n{}",
                        self.name,
                        self.run_text("systemctl --failed --no-legend")
                    );
                    break;
                }
                _ => {}
            }
            self.assert_nspawn_alive();
            if Instant::now() >= deadline {
                panic!(
                    "{}: not booted after {:?} (state {state:?}); jobs:\n{}",
                    self.name,
                    self.opts.boot_timeout,
                    self.run_text("systemctl list-jobs --no-legend")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kill PID 1 with SIGKILL, which takes every process of the container
    /// with it: a power cut. The overlay stays, so [`Container::boot`] starts
    /// the same machine again.
    pub fn power_cut(&mut self) {
        let nspawn_pid = self.nspawn.as_ref().map(Child::id);
        let leader = self
            .leader
            .take()
            .or_else(|| nspawn_pid.and_then(namespace_init_child_of));
        if let Some(pid) = leader {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if let Some(mut child) = self.nspawn.take() {
            wait_or_kill(&mut child, Duration::from_secs(30));
        }
    }

    fn assert_nspawn_alive(&mut self) {
        let child = self.nspawn.as_mut().expect("booted");
        if let Ok(Some(status)) = child.try_wait() {
            self.nspawn = None;
            panic!(
                "{}: systemd-nspawn exited ({status}); console:\n{}",
                self.name,
                self.console_tail(40)
            );
        }
    }

    /// The last `n` lines of the container's console.
    pub fn console_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.base.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The `nsenter` command that runs `argv` inside as root.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, argv: &[S]) -> Command {
        let leader = self.leader.expect("container is not booted");
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &leader.to_string(), "-a", "--", "/usr/bin/env", "-i"])
            .args(INNER_ENV)
            .args(argv)
            .stdin(Stdio::null());
        cmd
    }

    /// Run a shell command inside; whatever its outcome.
    pub fn run(&self, script: &str) -> Output {
        self.command(&["/bin/sh", "-c", script])
            .output()
            .expect("run nsenter")
    }

    /// Start a shell command inside without waiting for it; stdout and
    /// stderr are piped.
    pub fn spawn(&self, script: &str) -> Child {
        self.command(&["/bin/sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter")
    }

    /// Stdout and stderr of a command, whatever its outcome (for messages).
    pub fn run_text(&self, script: &str) -> String {
        let out = self.run(script);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Run a shell command that must succeed; its stdout, trimmed.
    #[track_caller]
    pub fn sh(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "in {}: `{script}` failed ({}):\n--- stdout\n{}--- stderr\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Run a shell command that must fail; its exit status and combined output.
    #[track_caller]
    pub fn sh_fails(&self, script: &str) -> (ExitStatus, String) {
        let out = self.run(script);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "in {}: `{script}` succeeded but should have failed:\n{text}",
            self.name
        );
        (out.status, text)
    }

    /// Poll `check` until it returns `Some`, or panic after `timeout` with
    /// `what` and the last observation. The timeout only guards against a
    /// hang; nothing is asserted about how long it took.
    #[track_caller]
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            match check() {
                Ok(v) => return v,
                Err(last) if Instant::now() >= deadline => {
                    panic!("in {}: gave up waiting for {what}; last: {last}", self.name)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Write the journal to disk so `journalctl` sees the latest lines.
    pub fn journal_sync(&self) {
        let _ = self.run("journalctl --sync");
    }
}

impl Drop for Container {
    /// Always runs, also when a test panics: no container or mount may
    /// outlive the test.
    fn drop(&mut self) {
        if std::thread::panicking() && self.nspawn.is_some() {
            eprintln!(
                "{}: console (last lines):\n{}",
                self.name,
                self.console_tail(30)
            );
        }
        self.power_cut();
        for (flag, path) in [
            (self.mounted_root, self.root.clone()),
            (self.mounted_base, self.base.clone()),
        ] {
            if flag {
                unmount(&path);
            }
        }
        self.mounted_root = false;
        self.mounted_base = false;
        let _ = fs::remove_dir(&self.base);
        if let Some(mut dog) = self.watchdog.take() {
            use std::io::Write as _;
            if let Some(mut stdin) = dog.stdin.take() {
                let _ = stdin.write_all(b"done\n");
            }
            let _ = dog.wait();
        }
    }
}

/// Start `cmd` from a thread that lives as long as the process. A
/// parent-death signal (`setpriv --pdeathsig`) fires when the *thread* that
/// forked the child exits, and libtest runs every test on a thread of its
/// own: a container shared by several tests must not die with the first.
fn spawn_from_lasting_thread(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("nspawn-spawner".into())
            .spawn(move || {
                // Ends only with the process: the sender is in a static.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((cmd, reply))
        .expect("the spawner thread is running");
    answer.recv().expect("the spawner thread answers")
}

/// Remove what a test process that died with containers up left in
/// [`BASE_DIR`] (its watchdog should have, unless it was killed too):
/// only entries named `PREFIX-PID-N` whose PID is gone, so containers of
/// other running test processes are left alone.
fn remove_leftovers() {
    let Ok(entries) = fs::read_dir(BASE_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("removing {name}, left behind by an earlier test run");
        let base = entry.path();
        unmount_if_mounted(&base.join("root"));
        unmount_if_mounted(&base);
        let _ = fs::remove_dir(&base);
    }
}

fn unmount_if_mounted(path: &Path) {
    let mounted = Command::new("mountpoint")
        .arg("-q")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        unmount(path);
    }
}

/// The child of `parent` that is PID 1 of its own PID namespace (nspawn
/// forks helpers before the container's init, so "any child" is not enough).
fn namespace_init_child_of(parent: u32) -> Option<u32> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .map(str::to_string)
        };
        let is_child = field("PPid:").and_then(|p| p.parse::<u32>().ok()) == Some(parent);
        let ns_init = field("NSpid:")
            .map(|ns| ns.split_whitespace().last() == Some("1"))
            .unwrap_or(false);
        if is_child && ns_init {
            return Some(pid);
        }
    }
    None
}

fn wait_or_kill(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Unmount, retrying while the last container processes let go; lazily as a
/// last resort so nothing is left mounted.
fn unmount(path: &Path) {
    for _ in 0..50 {
        let ok = Command::new("umount")
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{}: busy, unmounting lazily", path.display());
    let _ = Command::new("umount").arg("-l").arg(path).status();
}

#[track_caller]
fn run_host(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
