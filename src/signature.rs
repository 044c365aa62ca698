//! The archive's OpenSSH signature: `ssh-keygen -Y verify` against an
//! allowed-signers file, in the namespace `releasectl` (sign with
//! `ssh-keygen -Y sign -f KEY -n releasectl app.tar.zst`). OpenSSH is on
//! every host, and its allowed-signers file says which keys may sign for
//! whom (see ssh-keygen(1), ALLOWED SIGNERS).
//!
//! ssh-keygen reads the message on its stdin, so it is given the archive's
//! bytes as `stage` reads them to unpack (see [`crate::input`]): the bytes
//! checked are the bytes unpacked, stdin works as well as a file, and the
//! archive is read once.

use crate::error::{usage, Error, Result};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// The signature namespace: a signature made for anything else (a git
/// commit, a file signed for another tool) does not verify.
pub const NAMESPACE: &str = "releasectl";

/// Where ssh-keygen is looked for: as root, never by `$PATH`.
const SSH_KEYGEN: [&str; 3] = [
    "/usr/bin/ssh-keygen",
    "/bin/ssh-keygen",
    "/usr/local/bin/ssh-keygen",
];

/// The app's `[stage]` signing keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub allowed_signers: Option<PathBuf>,
    pub identity: Option<String>,
    /// Refuse to stage anything but a signed archive.
    pub required: bool,
}

/// A signature to check, as asked for.
#[derive(Debug)]
pub struct Request {
    signature: PathBuf,
    allowed_signers: PathBuf,
    identity: Option<String>,
}

impl Request {
    /// The flags and the policy together: `None` when nothing is to be
    /// checked; refused when a signature is required but not given, or
    /// given without allowed signers.
    pub fn new(
        signature: Option<&Path>,
        allowed_signers: Option<&Path>,
        identity: Option<&str>,
        policy: &Policy,
    ) -> Result<Option<Request>> {
        let Some(signature) = signature else {
            if policy.required {
                return Err(usage(
                    "the config requires a signed archive (require_signature): give --signature FILE",
                ));
            }
            return Ok(None);
        };
        let Some(allowed) = allowed_signers.or(policy.allowed_signers.as_deref()) else {
            return Err(usage(
                "--signature needs --allowed-signers FILE (or allowed_signers in the config's [stage])",
            ));
        };
        let identity = identity.map(str::to_string).or(policy.identity.clone());
        if let Some(id) = &identity {
            if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
                return Err(usage(format!(
                    "--signer-identity {}: 1-256 bytes, no control characters",
                    id.escape_debug()
                )));
            }
        }
        // Absolute: ssh-keygen runs in `/`.
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        Ok(Some(Request {
            signature: absolute(signature),
            allowed_signers: absolute(allowed),
            identity,
        }))
    }

    /// Before anything is created: both files are there, ssh-keygen is,
    /// and the identity to verify for is known (without one, the principal
    /// the allowed-signers file names for the signing key).
    pub fn prepare(&self) -> Result<Ready> {
        for (flag, file) in [
            ("--signature", &self.signature),
            ("--allowed-signers", &self.allowed_signers),
        ] {
            match std::fs::metadata(file) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(usage(format!(
                        "{flag} {}: not a regular file",
                        file.display()
                    )))
                }
                Err(e) => return Err(usage(format!("{flag} {}: {e}", file.display()))),
            }
        }
        let program = SSH_KEYGEN
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Operational(anyhow::anyhow!(
                    "checking the signature needs ssh-keygen (OpenSSH), not found in {}",
                    SSH_KEYGEN.join(", ")
                ))
            })?
            .to_path_buf();
        let identity = match &self.identity {
            Some(id) => id.clone(),
            None => self.find_principal(&program)?,
        };
        Ok(Ready {
            program,
            signature: self.signature.clone(),
            allowed_signers: self.allowed_signers.clone(),
            identity,
        })
    }

    /// `ssh-keygen -Y find-principals`: who the allowed-signers file says
    /// the signing key is (the first, if several).
    fn find_principal(&self, program: &Path) -> Result<String> {
        let out = command(program)
            .args(["-Y", "find-principals", "-s"])
            .arg(&self.signature)
            .arg("-f")
            .arg(&self.allowed_signers)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                Error::Operational(anyhow::anyhow!("running {}: {e}", program.display()))
            })?;
        let found = String::from_utf8_lossy(&out.stdout);
        match found.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(p) if out.status.success() && !p.chars().any(char::is_control) => {
                Ok(p.to_string())
            }
            _ => Err(usage(format!(
                "signature {}: not made by a key in {} ({})",
                self.signature.display(),
                self.allowed_signers.display(),
                last_line(&out.stderr)
            ))),
        }
    }
}

/// A check ready to start.
#[derive(Debug)]
pub struct Ready {
    program: PathBuf,
    signature: PathBuf,
    allowed_signers: PathBuf,
    identity: String,
}

impl Ready {
    /// Start `ssh-keygen -Y verify`, waiting for the archive on its stdin.
    /// Its output goes to an unnamed temp file, read for the verdict: a
    /// pipe it filled while we write its stdin would deadlock.
    pub fn start(self) -> Result<Verifying> {
        let fail = |e: std::io::Error| {
            Error::Operational(anyhow::anyhow!("running {}: {e}", self.program.display()))
        };
        let out = tempfile::tempfile().map_err(fail)?;
        let child = command(&self.program)
            .args(["-Y", "verify", "-f"])
            .arg(&self.allowed_signers)
            .arg("-I")
            .arg(&self.identity)
            .args(["-n", NAMESPACE, "-s"])
            .arg(&self.signature)
            .stdin(Stdio::piped())
            .stdout(out.try_clone().map_err(fail)?)
            .stderr(out.try_clone().map_err(fail)?)
            .spawn()
            .map_err(fail)?;
        Ok(Verifying {
            child: Some(child),
            out,
            ready: self,
        })
    }
}

/// A running check; killed if dropped before [`Verifying::finish`].
pub struct Verifying {
    child: Option<Child>,
    out: File,
    ready: Ready,
}

impl Verifying {
    /// The check's stdin, to write the archive into.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.child
            .as_mut()
            .and_then(|c| c.stdin.take())
            .expect("started with a piped stdin")
    }

    /// Wait for the verdict (the stdin must be closed by now): refused
    /// with exit 2 and ssh-keygen's reason unless the signature is good.
    pub fn finish(mut self, archive: &str) -> Result<()> {
        let r = &self.ready;
        let mut child = self.child.take().expect("finished once");
        let status = child.wait().map_err(|e| {
            Error::Operational(anyhow::anyhow!("waiting for {}: {e}", r.program.display()))
        })?;
        if status.success() {
            crate::log::info(&format!(
                "{archive}: good signature by {}",
                crate::log::clean(&r.identity)
            ));
            return Ok(());
        }
        let mut said = Vec::new();
        let _ = self.out.rewind();
        let _ = (&mut self.out).take(64 * 1024).read_to_end(&mut said);
        Err(usage(format!(
            "{archive}: signature {} does not verify for {} with {} ({})",
            r.signature.display(),
            crate::log::clean(&r.identity),
            r.allowed_signers.display(),
            last_line(&said)
        )))
    }
}

impl Drop for Verifying {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// ssh-keygen with nothing of our environment but a C locale.
fn command(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear().env("LC_ALL", "C").current_dir("/");
    c
}

/// The last line a tool printed, cleaned for our one-line message.
fn last_line(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no reason given");
    crate::log::clean(line).into_owned()
}
