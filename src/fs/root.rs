//! The app-root layout: ROOT holds `current` (a relative symlink to
//! `releases/<id>`), `releases/` and releasectl's state in `.releasectl/`.
//! [`RootDir`] opens ROOT once and hands out handles to what lies below
//! (see [`crate::fs::dir`] for the rules every handle follows), and swaps
//! `current` atomically.

use crate::error::{usage, Error, Result};
use crate::fs::dir::{io_error, open_trusted, Dir, DIR_FLAGS};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode};
use rustix::io::Errno;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

pub const CURRENT: &str = "current";
pub const RELEASES: &str = "releases";
pub const STATE_DIR: &str = ".releasectl";
/// Blue/green: one link per slot naming the release its instance runs.
pub const SLOTS: &str = "slots";
/// Prefix of the temp links renamed over `current`.
const TEMP_LINK_PREFIX: &str = ".current.tmp.";

/// An open app root.
#[derive(Debug)]
pub struct RootDir {
    dir: Dir,
}

impl RootDir {
    /// Open ROOT. A missing root is a usage error and is never created.
    pub fn open(path: &Path) -> Result<RootDir> {
        let dir = match open_trusted(path) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => {
                return Err(usage(format!("root {} does not exist", path.display())))
            }
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                return Err(usage(format!(
                    "root {} is not a directory (symlinked roots are refused)",
                    path.display()
                )))
            }
            Err(e) => return Err(io_error(e, format!("opening root {}", path.display()))),
        };
        Ok(RootDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir.shown
    }

    /// ROOT itself as a directory handle.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The release `current` points at, `None` if there is no `current` yet.
    /// A `current` that is not a symlink, or points outside `releases/`, is
    /// refused: releasectl would otherwise silently replace an operator's tree.
    pub fn current(&self) -> Result<Option<String>> {
        let target = match rfs::readlinkat(&self.dir.fd, CURRENT, Vec::new()) {
            Ok(t) => t,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::INVAL) => {
                return Err(usage(format!(
                    "{} is not a symlink; move it away before using releasectl",
                    self.dir.shown(CURRENT).display()
                )))
            }
            Err(e) => return Err(io_error(e, "reading current".into())),
        };
        let target = target.to_string_lossy().into_owned();
        let abs_prefix = format!("{}/{RELEASES}/", self.path().display());
        let id = target
            .strip_prefix("releases/")
            .or_else(|| target.strip_prefix(&abs_prefix))
            .map(|id| id.trim_end_matches('/'));
        match id {
            Some(id) if crate::release_id::validate(id).is_ok() => Ok(Some(id.to_string())),
            _ => Err(usage(format!(
                "{} points to \"{}\", which is not a release under {RELEASES}/; fix it by hand",
                self.dir.shown(CURRENT).display(),
                target.escape_debug()
            ))),
        }
    }

    /// Open `releases/<id>`, which must be a real directory below a real
    /// `releases/` (a symlink, even to a sibling release, is refused). The
    /// handle is what hooks and health checks then run in.
    pub fn open_release(&self, id: &str) -> Result<Dir> {
        crate::release_id::validate(id)?;
        let releases = self.releases_dir(false)?.ok_or_else(|| {
            usage(format!(
                "release {} does not exist",
                self.dir.shown(release_path(id)).display()
            ))
        })?;
        let shown = releases.shown(id);
        match rfs::openat(&releases.fd, id, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(releases.child(fd, id)),
            Err(Errno::NOENT) => Err(usage(format!("release {} does not exist", shown.display()))),
            // O_DIRECTORY|O_NOFOLLOW on a symlink fails with ELOOP or ENOTDIR
            // depending on the kernel: lstat says which it was.
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                let symlink = releases
                    .stat(id)
                    .ok()
                    .flatten()
                    .is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                let what = if symlink {
                    "is a symlink, not a directory"
                } else {
                    "is not a directory"
                };
                Err(usage(format!("release {} {what}", shown.display())))
            }
            Err(e) => Err(io_error(e, format!("opening {}", shown.display()))),
        }
    }

    /// Make sure `releases/<id>` is a real directory (see [`Self::open_release`]).
    pub fn check_release(&self, id: &str) -> Result<()> {
        self.open_release(id).map(drop)
    }

    /// Point `current` at `releases/<id>`, atomically.
    ///
    /// A temp link is created beside `current` and renamed over it: rename(2)
    /// replaces the old link in one step, so a reader always sees either the
    /// old or the new target. `unlink` + `symlink` (what `ln -sfn` did before
    /// coreutils 8.31) leaves a window in which `current` does not exist.
    pub fn swap_current(&self, id: &str) -> Result<()> {
        swap_link(&self.dir, CURRENT, &release_path(id))
    }

    /// Point `slots/<slot>` at `releases/<id>` (blue/green: the working
    /// directory of that slot's instance), the same atomic way as `current`.
    /// `slots/` is made as ROOT's owner where missing.
    pub fn point_slot(&self, slot: &str, id: &str) -> Result<()> {
        let slots = self.dir.open_or_create_dir(SLOTS, 0o755)?;
        swap_link(&slots, slot, &format!("../{}", release_path(id)))
    }

    /// The release `slots/<slot>` names, if the link exists and names one.
    pub fn slot_release(&self, slot: &str) -> Result<Option<String>> {
        let Some(slots) = self.dir.open_dir(SLOTS)? else {
            return Ok(None);
        };
        let target = match rfs::readlinkat(&slots.fd, slot, Vec::new()) {
            Ok(t) => t.to_string_lossy().into_owned(),
            Err(Errno::NOENT) | Err(Errno::INVAL) => return Ok(None),
            Err(e) => {
                return Err(io_error(
                    e,
                    format!("reading {}", slots.shown(slot).display()),
                ))
            }
        };
        Ok(target
            .strip_prefix("../releases/")
            .filter(|id| crate::release_id::validate(id).is_ok())
            .map(str::to_string))
    }

    /// Remove temp links left by a process killed between `symlinkat` and
    /// `renameat`. Only lock holders create them, so under the lock every
    /// one that exists is stale.
    pub fn remove_stale_temp_links(&self) -> Result<()> {
        for entry in self.dir.entries()? {
            let Some(name) = entry
                .name
                .to_str()
                .filter(|n| n.starts_with(TEMP_LINK_PREFIX))
            else {
                continue;
            };
            self.dir.unlink(name)?;
            crate::log::debug(&format!("removed stale {name}"));
        }
        Ok(())
    }

    /// Remove `current` (only used to undo an activation that created it).
    pub fn remove_current(&self) -> Result<()> {
        self.dir.unlink(CURRENT)?;
        self.sync()
    }

    /// fsync ROOT: a rename is durable only once its directory is.
    pub fn sync(&self) -> Result<()> {
        self.dir.sync()
    }

    /// Open `.releasectl/`, creating it when `create` is set. `None` when it
    /// does not exist and `create` is false (read-only commands never create it).
    pub fn state_dir(&self, create: bool) -> Result<Option<Dir>> {
        self.subdir(STATE_DIR, create)
    }

    /// Open `releases/`, creating it when `create` is set.
    pub fn releases_dir(&self, create: bool) -> Result<Option<Dir>> {
        self.subdir(RELEASES, create)
    }

    fn subdir(&self, name: &str, create: bool) -> Result<Option<Dir>> {
        if !create {
            return self.dir.open_dir(name);
        }
        let dir = self.dir.open_or_create_dir(name, 0o755)?;
        // Made by root in a user's ROOT by an older version: root now
        // writes there with the user's rights, who cannot write in it.
        // Said plainly, instead of a "Permission denied" further on.
        if let Some(owner) = self.dir.act() {
            if dir.stat_self()?.st_uid == 0 {
                return Err(Error::operational(format_args!(
                    "{} belongs to root, but {} to uid {}: root writes below it with that \
                     user's rights (README, Security model); give it to them once: \
                     chown -R {}: {}",
                    dir.shown.display(),
                    self.path().display(),
                    owner.uid,
                    owner.uid,
                    dir.shown.display()
                )));
            }
        }
        Ok(Some(dir))
    }
}

/// Point the link `name` in `dir` at `target`: a temp link created beside
/// it and renamed over it, so a reader always sees the old or the new
/// target, then the directory flushed. As `dir`'s owner, like every write
/// below ROOT (a link in a directory they own is theirs to replace anyway).
fn swap_link(dir: &Dir, name: &str, target: &str) -> Result<()> {
    let fd = &dir.fd;
    let tmp = temp_link_name();
    dir.as_owner_io(|| {
        // A leftover of a killed process that had our pid; nobody else uses the name.
        let _ = rfs::unlinkat(fd, &tmp, AtFlags::empty());
        rfs::symlinkat(target, fd, &tmp)
    })
    .map_err(|e| {
        io_error(
            e,
            format!("creating temp link {}", dir.shown(&tmp).display()),
        )
    })?;
    if let Err(e) = dir.as_owner_io(|| rfs::renameat(fd, &tmp, fd, name)) {
        let _ = dir.unlink(&tmp);
        return Err(io_error(
            e,
            format!("renaming temp link over {}", dir.shown(name).display()),
        ));
    }
    crate::fault::check(crate::fault::point::SWAP_SYNC).map_err(|e| {
        io_error(
            Errno::from_io_error(&e).unwrap_or(Errno::IO),
            format!("fsync {}", dir.shown.display()),
        )
    })?;
    dir.sync()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::dir::{contains, Access};
    use std::ffi::OsStr;
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

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
        symlink("v1", dir.path().join("releases/v2")).unwrap();
        std::fs::write(dir.path().join("releases/file"), "x").unwrap();
        root.check_release("v1").unwrap();
        assert!(root.check_release("v2").is_err());
        assert!(root.check_release("file").is_err());
        assert!(root.check_release("missing").is_err());
    }

    #[test]
    fn symlinked_releases_dir_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("v1")).unwrap();
        let (dir, root) = root_with(&[]);
        symlink(outside.path(), dir.path().join("releases")).unwrap();
        let e = root.releases_dir(false).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{}", e.one_line());
        assert!(root.check_release("v1").is_err());
    }

    #[test]
    fn contains_walks_up_by_handle() {
        let (dir, root) = root_with(&["v1"]);
        let elsewhere = tempfile::tempdir().unwrap();
        let open = |p: &Path| rfs::open(p, DIR_FLAGS, Mode::empty()).unwrap();
        let (top, v1) = (open(dir.path()), open(&dir.path().join("releases/v1")));
        assert!(contains(top.as_fd(), v1.as_fd()).unwrap());
        assert!(contains(top.as_fd(), root.dir().as_fd()).unwrap());
        assert!(!contains(v1.as_fd(), top.as_fd()).unwrap());
        assert!(!contains(open(elsewhere.path()).as_fd(), v1.as_fd()).unwrap());
    }

    #[test]
    fn missing_root_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(RootDir::open(&missing).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn remove_tree_removes_symlinks_as_names_only() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "victim").unwrap();
        let (dir, root) = root_with(&["v1"]);
        let v1 = dir.path().join("releases/v1");
        std::fs::create_dir_all(v1.join("a/b/c")).unwrap();
        std::fs::write(v1.join("a/b/c/f"), "x").unwrap();
        symlink(outside.path(), v1.join("a/link-to-outside")).unwrap();
        symlink(outside.path().join("keep"), v1.join("a/b/file-link")).unwrap();
        let releases = root.releases_dir(false).unwrap().unwrap();
        releases.remove_tree("v1").unwrap();
        assert!(!v1.exists());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("keep")).unwrap(),
            "victim"
        );
        // A symlink at the top is removed as a link, its target untouched.
        symlink(outside.path(), dir.path().join("releases/v2")).unwrap();
        releases.remove_tree("v2").unwrap();
        assert!(outside.path().join("keep").exists());
    }

    /// A bind mount inside a tree being deleted keeps its contents (the
    /// same file system, so only the mount id tells). Needs root.
    #[test]
    fn remove_tree_stops_at_a_mount_point() {
        if !rustix::process::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the tests as root"
            );
            eprintln!("skipped: needs root for mount --bind");
            return;
        }
        let victim = tempfile::tempdir().unwrap();
        std::fs::write(victim.path().join("keep"), "victim").unwrap();
        let (dir, root) = root_with(&["v1"]);
        let mnt = dir.path().join("releases/v1/shared");
        std::fs::create_dir(&mnt).unwrap();
        let mount = |args: &[&std::ffi::OsStr]| {
            let ok = std::process::Command::new("mount")
                .args(args)
                .status()
                .unwrap();
            assert!(ok.success(), "mount {args:?}");
        };
        mount(&[
            OsStr::new("--bind"),
            victim.path().as_os_str(),
            mnt.as_os_str(),
        ]);
        let releases = root.releases_dir(false).unwrap().unwrap();
        let e = releases.remove_tree("v1").unwrap_err();
        let unmounted = std::process::Command::new("umount").arg(&mnt).status();
        assert!(e.one_line().contains("mount point"), "{}", e.one_line());
        assert!(victim.path().join("keep").exists());
        assert!(unmounted.unwrap().success());
    }

    #[test]
    fn state_files_must_be_plain_files_with_one_link() {
        let (dir, root) = root_with(&[]);
        let state = root.state_dir(true).unwrap().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "v").unwrap();
        symlink(&victim, dir.path().join(".releasectl/sym")).unwrap();
        std::fs::hard_link(&victim, dir.path().join(".releasectl/hard")).unwrap();
        rustix::fs::mknodat(
            &state,
            "fifo",
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        for (name, how) in [
            ("sym", Access::Append),
            ("hard", Access::Append),
            ("hard", Access::Read),
            ("fifo", Access::Read),
            ("fifo", Access::ReadWrite),
        ] {
            let e = state.open_file(name, how).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{name}: {}", e.one_line());
            assert!(e.one_line().contains(name), "{}", e.one_line());
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "v");
        assert!(state.open_file("missing", Access::Read).unwrap().is_none());
        // A temp file replaces whatever was planted under its name.
        state.open_file("sym", Access::CreateNew).unwrap().unwrap();
        assert!(!dir.path().join(".releasectl/sym").is_symlink());
    }
}
