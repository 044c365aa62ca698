//! The archive's OpenSSH signature: `ssh-keygen -Y verify` against an
//! allowed-signers file, in the namespace `releasectl` (sign with
//! `ssh-keygen -Y sign -f KEY -n releasectl app.tar.zst`). OpenSSH is on
//! every host, and its allowed-signers file says which keys may sign for
//! whom (see ssh-keygen(1), ALLOWED SIGNERS).
//!
//! ssh-keygen reads the message on its stdin, so it is given the archive's
//! bytes as `stage` reads them to unpack (see [`crate::staging::input`]): the bytes
//! checked are the bytes unpacked, stdin works as well as a file, and the
//! archive is read once.

use crate::config::stage::Policy;
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
    ///
    /// Each file is opened and read once, into a private snapshot that both
    /// ssh-keygen runs read: a name looked up again could meanwhile name
    /// another file (or a FIFO) if it lies in a directory someone else may
    /// write, and the check would not be of the file that was judged.
    pub fn prepare(&self) -> Result<Ready> {
        let fail = |e: std::io::Error| {
            Error::operational(format_args!("a private copy of the signature files: {e}"))
        };
        let snapshot = tempfile::Builder::new()
            .prefix("releasectl-signature-")
            .tempdir()
            .map_err(fail)?;
        let signature = snapshot.path().join("signature");
        let allowed_signers = snapshot.path().join("allowed_signers");
        for (flag, file, copy) in [
            ("--signature", &self.signature, &signature),
            ("--allowed-signers", &self.allowed_signers, &allowed_signers),
        ] {
            std::fs::write(copy, read_once(flag, file)?).map_err(fail)?;
        }
        let program = SSH_KEYGEN
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::operational(format_args!(
                    "checking the signature needs ssh-keygen (OpenSSH), not found in {}",
                    SSH_KEYGEN.join(", ")
                ))
            })?
            .to_path_buf();
        let signature = Snapshot {
            shown: self.signature.clone(),
            copy: signature,
        };
        let allowed_signers = Snapshot {
            shown: self.allowed_signers.clone(),
            copy: allowed_signers,
        };
        let identity = match &self.identity {
            Some(id) => id.clone(),
            None => find_principal(&program, &signature, &allowed_signers)?,
        };
        Ok(Ready {
            program,
            signature,
            allowed_signers,
            identity,
            _snapshot: snapshot,
        })
    }
}

/// The most read of a signature or allowed-signers file.
const MAX_FILE: u64 = 1 << 20;

/// Open `file` once (the operator named it: a symlink at the top is
/// followed, as for a source), check that what was opened is a regular
/// file, and read it.
fn read_once(flag: &str, file: &Path) -> Result<Vec<u8>> {
    use rustix::fs::{self as rfs, FileType, Mode, OFlags};
    let bad = |why: &dyn std::fmt::Display| usage(format!("{flag} {}: {why}", file.display()));
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = rfs::open(file, flags, Mode::empty()).map_err(|e| bad(&std::io::Error::from(e)))?;
    let st = rfs::fstat(&fd).map_err(|e| bad(&std::io::Error::from(e)))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(bad(&"not a regular file"));
    }
    if st.st_size as u64 > MAX_FILE {
        return Err(bad(&format!("larger than {MAX_FILE} bytes")));
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(&e))?;
    Ok(bytes)
}

/// A file the operator named, and the private copy ssh-keygen reads.
#[derive(Debug)]
struct Snapshot {
    shown: PathBuf,
    copy: PathBuf,
}

/// `ssh-keygen -Y find-principals`: who the allowed-signers file says the
/// signing key is (the first, if several).
fn find_principal(program: &Path, signature: &Snapshot, allowed: &Snapshot) -> Result<String> {
    let out = command(program)
        .args(["-Y", "find-principals", "-s"])
        .arg(&signature.copy)
        .arg("-f")
        .arg(&allowed.copy)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::operational(format_args!("running {}: {e}", program.display())))?;
    let found = String::from_utf8_lossy(&out.stdout);
    match found.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(p) if out.status.success() && !p.chars().any(char::is_control) => Ok(p.to_string()),
        _ => Err(usage(format!(
            "signature {}: not made by a key in {} ({})",
            signature.shown.display(),
            allowed.shown.display(),
            last_line(&out.stderr)
        ))),
    }
}

/// A check ready to start.
#[derive(Debug)]
pub struct Ready {
    program: PathBuf,
    signature: Snapshot,
    allowed_signers: Snapshot,
    identity: String,
    /// Holds the copies; removed with the check.
    _snapshot: tempfile::TempDir,
}

impl Ready {
    /// Start `ssh-keygen -Y verify`, waiting for the archive on its stdin.
    /// Its output goes to an unnamed temp file, read for the verdict: a
    /// pipe it filled while we write its stdin would deadlock.
    pub fn start(self) -> Result<Verifying> {
        let fail = |e: std::io::Error| {
            Error::operational(format_args!("running {}: {e}", self.program.display()))
        };
        // As root, also while a stage writes with the owner's rights: a
        // child never inherits an owner's effective ids (see crate::fs::creds).
        let (out, child) = crate::fs::creds::acting_io(None, || {
            let out = tempfile::tempfile()?;
            let child = command(&self.program)
                .args(["-Y", "verify", "-f"])
                .arg(&self.allowed_signers.copy)
                .arg("-I")
                .arg(&self.identity)
                .args(["-n", NAMESPACE, "-s"])
                .arg(&self.signature.copy)
                .stdin(Stdio::piped())
                .stdout(out.try_clone()?)
                .stderr(out.try_clone()?)
                .spawn()?;
            Ok::<_, std::io::Error>((out, child))
        })
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
            Error::operational(format_args!("waiting for {}: {e}", r.program.display()))
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
            r.signature.shown.display(),
            crate::log::clean(&r.identity),
            r.allowed_signers.shown.display(),
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
