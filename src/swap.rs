//! The app root as a directory handle, and the atomic `current` swap.
//!
//! Every path below ROOT is resolved relative to an `O_DIRECTORY|O_NOFOLLOW`
//! descriptor of ROOT, so a concurrent rename of ROOT itself or a symlink
//! planted in its place cannot redirect what we touch.

use crate::error::{usage, Result};
use anyhow::Context;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub const CURRENT: &str = "current";
pub const RELEASES: &str = "releases";
pub const STATE_DIR: &str = ".releasectl";
/// Prefix of the temp links renamed over `current`.
const TEMP_LINK_PREFIX: &str = ".current.tmp.";

/// An open app root.
#[derive(Debug)]
pub struct RootDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl RootDir {
    /// Open ROOT. A missing root is a usage error and is never created.
    pub fn open(path: &Path) -> Result<RootDir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(RootDir {
                path: path.to_path_buf(),
                fd,
            }),
            Err(Errno::NOENT) => Err(usage(format!("root {} does not exist", path.display()))),
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => Err(usage(format!(
                "root {} is not a directory (symlinked roots are refused)",
                path.display()
            ))),
            Err(e) => Err(usage(format!("cannot open root {}: {e}", path.display()))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The release `current` points at, `None` if there is no `current` yet.
    /// A `current` that is not a symlink, or points outside `releases/`, is
    /// refused: releasectl would otherwise silently replace an operator's tree.
    pub fn current(&self) -> Result<Option<String>> {
        let target = match rfs::readlinkat(&self.fd, CURRENT, Vec::new()) {
            Ok(t) => t,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::INVAL) => {
                return Err(usage(format!(
                    "{} is not a symlink; move it away before using releasectl",
                    self.path.join(CURRENT).display()
                )))
            }
            Err(e) => return Err(anyhow::Error::from(e).context("reading current").into()),
        };
        let target = target.to_string_lossy().into_owned();
        let abs_prefix = format!("{}/{RELEASES}/", self.path.display());
        let id = target
            .strip_prefix("releases/")
            .or_else(|| target.strip_prefix(&abs_prefix))
            .map(|id| id.trim_end_matches('/'));
        match id {
            Some(id) if crate::release_id::validate(id).is_ok() => Ok(Some(id.to_string())),
            _ => Err(usage(format!(
                "{} points to \"{target}\", which is not a release under {RELEASES}/; fix it by hand",
                self.path.join(CURRENT).display()
            ))),
        }
    }

    /// Make sure `releases/<id>` is a real directory (lstat: a symlink, even
    /// to a sibling release, is refused).
    pub fn check_release(&self, id: &str) -> Result<()> {
        crate::release_id::validate(id)?;
        let shown = self.path.join(RELEASES).join(id);
        match rfs::statat(&self.fd, release_path(id), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                self.check_releases_dir()
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => Err(usage(
                format!("release {} is a symlink, not a directory", shown.display()),
            )),
            Ok(_) => Err(usage(format!(
                "release {} is not a directory",
                shown.display()
            ))),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
                Err(usage(format!("release {} does not exist", shown.display())))
            }
            Err(e) => Err(usage(format!("cannot stat {}: {e}", shown.display()))),
        }
    }

    /// `releases/` itself must be a real directory, or "inside releases/" means nothing.
    fn check_releases_dir(&self) -> Result<()> {
        match rfs::statat(&self.fd, RELEASES, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Ok(()),
            _ => Err(usage(format!(
                "{} is not a directory",
                self.path.join(RELEASES).display()
            ))),
        }
    }

    /// Point `current` at `releases/<id>`, atomically.
    ///
    /// A temp link is created beside `current` and renamed over it: rename(2)
    /// replaces the old link in one step, so a reader always sees either the
    /// old or the new target. `unlink` + `symlink` (what `ln -sfn` did before
    /// coreutils 8.31) leaves a window in which `current` does not exist.
    pub fn swap_current(&self, id: &str) -> Result<()> {
        let tmp = temp_link_name();
        // A leftover of a killed process that had our pid; nobody else uses the name.
        let _ = rfs::unlinkat(&self.fd, &tmp, AtFlags::empty());
        rfs::symlinkat(release_path(id), &self.fd, &tmp)
            .with_context(|| format!("creating temp link {}", self.path.join(&tmp).display()))?;
        if let Err(e) = rfs::renameat(&self.fd, &tmp, &self.fd, CURRENT) {
            let _ = rfs::unlinkat(&self.fd, &tmp, AtFlags::empty());
            return Err(anyhow::Error::from(e)
                .context(format!(
                    "renaming temp link over {}",
                    self.path.join(CURRENT).display()
                ))
                .into());
        }
        self.sync()
    }

    /// Remove temp links left by a process killed between `symlinkat` and
    /// `renameat`. Only lock holders create them, so under the lock every
    /// one that exists is stale.
    pub fn remove_stale_temp_links(&self) -> Result<()> {
        let dir = std::fs::read_dir(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| n.starts_with(TEMP_LINK_PREFIX)) else {
                continue;
            };
            match rfs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => crate::log::debug(&format!("removed stale {name}")),
                Err(e) => {
                    return Err(anyhow::Error::from(e)
                        .context(format!("removing {name}"))
                        .into())
                }
            }
        }
        Ok(())
    }

    /// Remove `current` (only used to undo an activation that created it).
    pub fn remove_current(&self) -> Result<()> {
        match rfs::unlinkat(&self.fd, CURRENT, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => self.sync(),
            Err(e) => Err(anyhow::Error::from(e).context("removing current").into()),
        }
    }

    /// fsync ROOT: a rename is durable only once its directory is.
    pub fn sync(&self) -> Result<()> {
        rfs::fsync(&self.fd)
            .with_context(|| format!("fsync {}", self.path.display()))
            .map_err(Into::into)
    }

    /// Open `.releasectl/`, creating it when `create` is set. `None` when it
    /// does not exist and `create` is false (read-only commands never create it).
    pub fn state_dir(&self, create: bool) -> Result<Option<OwnedFd>> {
        self.subdir(STATE_DIR, create)
    }

    /// Open `releases/`, creating it when `create` is set.
    pub fn releases_dir(&self, create: bool) -> Result<Option<OwnedFd>> {
        self.subdir(RELEASES, create)
    }

    fn subdir(&self, name: &str, create: bool) -> Result<Option<OwnedFd>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let shown = self.path.join(name);
        match rfs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::NOENT) if create => {}
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                return Err(usage(format!("{} is not a directory", shown.display())))
            }
            Err(e) => return Err(usage(format!("cannot open {}: {e}", shown.display()))),
        }
        match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("creating {}", shown.display()))
                    .into())
            }
        }
        self.sync()?;
        let fd = rfs::openat(&self.fd, name, flags, Mode::empty())
            .with_context(|| format!("opening {}", shown.display()))?;
        Ok(Some(fd))
    }
}

/// The relative link target of a release: `current` must keep working when
/// ROOT is moved, bind-mounted or seen from inside a container.
pub fn release_path(id: &str) -> String {
    format!("{RELEASES}/{id}")
}

/// A temp link name unique to this process and call.
fn temp_link_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{TEMP_LINK_PREFIX}{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Open a file inside a directory handle, never following a symlink.
pub fn open_in(dir: &OwnedFd, name: &str, flags: OFlags, mode: u32) -> std::io::Result<File> {
    let fd = rfs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(releases: &[&str]) -> (tempfile::TempDir, RootDir) {
        let dir = tempfile::tempdir().unwrap();
        for r in releases {
            std::fs::create_dir_all(dir.path().join("releases").join(r)).unwrap();
        }
        let root = RootDir::open(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn swap_points_current_relatively() {
        let (dir, root) = root_with(&["v1", "v2"]);
        assert_eq!(root.current().unwrap(), None);
        root.swap_current("v1").unwrap();
        root.swap_current("v2").unwrap();
        assert_eq!(root.current().unwrap().as_deref(), Some("v2"));
        let target = std::fs::read_link(dir.path().join("current")).unwrap();
        assert_eq!(target, Path::new("releases/v2"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".current.tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn current_as_directory_is_refused() {
        let (dir, root) = root_with(&["v1"]);
        std::fs::create_dir(dir.path().join("current")).unwrap();
        assert!(root.current().is_err());
    }

    #[test]
    fn symlinked_release_is_refused() {
        let (dir, root) = root_with(&["v1"]);
        std::os::unix::fs::symlink("v1", dir.path().join("releases/v2")).unwrap();
        std::fs::write(dir.path().join("releases/file"), "x").unwrap();
        root.check_release("v1").unwrap();
        assert!(root.check_release("v2").is_err());
        assert!(root.check_release("file").is_err());
        assert!(root.check_release("missing").is_err());
    }

    #[test]
    fn missing_root_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(RootDir::open(&missing).is_err());
        assert!(!missing.exists());
    }
}
