//! Running hook and health-check commands: argv lists without a shell, with a
//! deadline, stoppable when the activation is interrupted.

use crate::cancel::Cancel;
use anyhow::{anyhow, Result};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Run `argv` in `cwd` with `env` added. `Err` says why it did not succeed.
/// The child's stdout goes to our stderr so `--json` output stays clean.
pub fn run(
    argv: &[String],
    cwd: &Path,
    env: &[(&str, String)],
    deadline: Option<Instant>,
    cancel: &Cancel,
) -> Result<()> {
    let shown = shell_words(argv);
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::null(), Stdio::from);
    let mut cmd = Command::new(&argv[0]);
    // Its own process group, so a timeout or signal stops the whole hook
    // (`sh -c "...; sleep 20"` included), not just its first process.
    cmd.process_group(0);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow!("`{shown}` could not start: {e}"))?;
    let pid = child.id();

    // A waiter thread reports the exit at once; this thread keeps an eye on
    // the deadline and on signals meanwhile.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    loop {
        let tick = Duration::from_millis(50);
        let wait = deadline.map_or(tick, |d| {
            d.saturating_duration_since(Instant::now()).min(tick)
        });
        match rx.recv_timeout(wait) {
            Ok(Ok(status)) if status.success() => return Ok(()),
            Ok(Ok(status)) => return Err(anyhow!("`{shown}` failed ({status})")),
            Ok(Err(e)) => return Err(anyhow!("`{shown}`: {e}")),
            Err(_) => {}
        }
        let why = match (cancel.check(), deadline) {
            (Err(signal), _) => anyhow::Error::new(signal),
            (Ok(()), Some(d)) if Instant::now() >= d => anyhow!("timed out"),
            _ => continue,
        };
        kill(pid);
        let _ = rx.recv_timeout(Duration::from_secs(5));
        return Err(why.context(format!("`{shown}`")));
    }
}

/// SIGKILL the child's process group (its pid is the group id).
fn kill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// argv as an operator would type it, for messages: words with spaces or
/// quotes are single-quoted.
pub fn shell_words(argv: &[String]) -> String {
    let plain = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b))
    };
    argv.iter()
        .map(|w| {
            if plain(w) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
