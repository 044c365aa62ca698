//! Running hook and health-check commands: argv lists without a shell, with a
//! deadline, stoppable when the activation is interrupted.
//!
//! Their output (stdout and stderr, one pipe) never reaches our stderr raw:
//! a hook such as `nginx -t` prints what a release's files say, and the
//! release belongs to the deploy user, while our stderr may be root's
//! terminal. It is relayed line by line, each line escaped as every other
//! message is (escape sequences, CR, BEL, bytes that are not UTF-8 shown as
//! text; tabs kept), with bounded memory and a bound on how much is shown.

use crate::host::cancel::Cancel;
use anyhow::{anyhow, Result};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Run `argv` in `cwd` with `env` added. `Err` says why it did not succeed.
/// The child's output goes to our stderr, escaped (see [`Relay`]), so
/// `--json` output stays clean.
pub fn run(
    argv: &[String],
    cwd: &Path,
    env: &[(&str, String)],
    deadline: Option<Instant>,
    cancel: &Cancel,
) -> Result<()> {
    run_tracked(argv, cwd, env, deadline, cancel, &mut |_| {})
}

/// [`run`], calling `started` with the process group id as soon as the
/// command runs (an activation records it: see [`crate::state::pending::HOOK_FILE`]).
pub fn run_tracked(
    argv: &[String],
    cwd: &Path,
    env: &[(&str, String)],
    deadline: Option<Instant>,
    cancel: &Cancel,
    started: &mut dyn FnMut(u32),
) -> Result<()> {
    let shown = shell_words(argv);
    let (output, writer) =
        std::io::pipe().map_err(|e| anyhow!("`{shown}`: no pipe for its output: {e}"))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| anyhow!("`{shown}`: no pipe for its output: {e}"))?;
    let mut cmd = Command::new(&argv[0]);
    // Its own process group, so a timeout or signal stops the whole hook
    // (`sh -c "...; sleep 20"` included), not just its first process.
    cmd.process_group(0);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end go with `cmd`: the relay sees the
    // end of the output when the hook's processes have closed theirs.
    drop(cmd);
    let child = spawned.map_err(|e| anyhow!("`{shown}` could not start: {e}"))?;
    started(child.id());
    let relayed = Relay::start(output);
    let outcome = watch(child, &shown, deadline, cancel);
    relayed.finish();
    outcome
}

/// Wait for `child` to exit, killing its group at the deadline or on a
/// signal.
fn watch(
    mut child: std::process::Child,
    shown: &str,
    deadline: Option<Instant>,
    cancel: &Cancel,
) -> Result<()> {
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

/// The thread that relays a hook's output to our stderr, a line at a time
/// (see [`crate::log::command_output`]).
struct Relay {
    done: mpsc::Receiver<()>,
}

impl Relay {
    /// A line longer than this is shown in pieces of this size: all a line
    /// may hold in memory.
    const LINE: usize = 4096;
    /// What one command may show; the rest is read and counted, so the
    /// command never blocks on a full pipe, and left out.
    const SHOWN: usize = 1 << 20;
    /// How long the end of the output is waited for once the command has
    /// exited: a process it left behind may keep the pipe open.
    const LINGER: Duration = Duration::from_secs(1);

    fn start(mut output: std::io::PipeReader) -> Relay {
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Lines::default();
            let mut buf = [0u8; 8192];
            loop {
                match output.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => lines.feed(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            lines.finish();
            let _ = tx.send(());
        });
        Relay { done }
    }

    /// Wait (bounded) until everything the command wrote has been shown.
    fn finish(self) {
        let _ = self.done.recv_timeout(Self::LINGER);
    }
}

/// Output split into lines, each shown as soon as it is complete.
#[derive(Default)]
struct Lines {
    line: Vec<u8>,
    shown: usize,
    left_out: usize,
}

impl Lines {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = Relay::LINE - self.line.len();
            let (take, ends) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) if i < room => (i + 1, true),
                _ => (bytes.len().min(room), false),
            };
            self.line.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if ends || self.line.len() == Relay::LINE {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\n') {
            line.pop();
            // A CRLF line ending is a line ending, not a carriage return.
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if self.shown >= Relay::SHOWN {
            self.left_out += line.len();
            return;
        }
        self.shown += line.len();
        crate::log::command_output(&line);
    }

    fn finish(&mut self) {
        if !self.line.is_empty() {
            self.flush();
        }
        if self.left_out > 0 {
            crate::log::command_output(
                format!("({} more bytes of output not shown)", self.left_out).as_bytes(),
            );
        }
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
