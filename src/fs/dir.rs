//! Directory handles: every file operation under an app root goes through
//! them ([`crate::fs::root`] lays out the app root with them).
//!
//! The rule: ROOT is opened once (`O_DIRECTORY|O_NOFOLLOW`) and everything
//! below it is reached one name at a time from an open directory handle,
//! with `*at` calls that never follow a symlink (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`, and `unlinkat`/`renameat`, which never follow).
//! No path below ROOT is looked up twice: what was checked is the handle
//! that is used. releasectl runs as root over a tree that an unprivileged
//! deploy user owns and may rename, exchange or replace at any instant; with
//! this rule such a race can make an operation fail, never make root act on
//! something outside ROOT. Paths are kept only to name things in messages.
//!
//! State files (`.releasectl/*`) are also opened without blocking and
//! judged by what was opened: a regular file with one link, owned by us or
//! by ROOT's owner ([`Dir::open_file`]).

use crate::error::{usage, Error, Result};
use crate::fs::creds;
use crate::fs::creds::Owner;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Whose files releasectl trusts below ROOT: its own (root's, when run by
/// the units) and those of ROOT's owner, who could rewrite them anyway.
#[derive(Debug, Clone, Copy)]
struct Trust {
    me: u32,
    root_owner: u32,
}

impl Trust {
    /// root's files are trusted by everyone: a deploy user reading the
    /// state root wrote must not be refused.
    fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == self.me || uid == self.root_owner
    }
}

/// An open directory below (or at) ROOT, and its path for messages.
#[derive(Debug)]
pub struct Dir {
    pub(super) fd: OwnedFd,
    pub(super) shown: PathBuf,
    trust: Trust,
    /// Whose rights every write in this directory is made with (see
    /// [`crate::fs::creds`]): `None` for root's own directories (and in an
    /// unprivileged run), else the owner of the first directory on the way
    /// down from ROOT that another user owns.
    act: Act,
}

/// [`Dir::act`], worked out on the first write: most handles are only
/// read through, and an fstat per open would cost `list` 10 000 of them.
#[derive(Debug)]
struct Act {
    /// The rule of the parent directory.
    parent: Option<Owner>,
    here: std::sync::OnceLock<Option<Owner>>,
}

impl Act {
    fn known(act: Option<Owner>) -> Act {
        let here = std::sync::OnceLock::new();
        let _ = here.set(act);
        Act { parent: act, here }
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One name in a directory, with its type as the directory entry says
/// (never trusted for more than skipping: every open re-checks).
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: OsString,
    pub kind: FileType,
}

/// How to open a state file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Access {
    Read,
    /// Read and write, created if missing (the lock file).
    ReadWrite,
    /// Append (and read back), created if missing (history).
    Append,
    /// Write a new file, replacing any leftover of the name (temp files).
    CreateNew,
}

impl Dir {
    /// The path of `name` in this directory, for messages.
    pub fn shown(&self, name: impl AsRef<Path>) -> PathBuf {
        self.shown.join(name)
    }

    /// Open the subdirectory `name`; `None` if it does not exist. A symlink
    /// or any other non-directory is refused with an error naming it.
    pub fn open_dir(&self, name: &str) -> Result<Option<Dir>> {
        match rfs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(self.child(fd, name))),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => Err(usage(format!(
                "{} is not a directory (symlinks are refused)",
                self.shown(name).display()
            ))),
            Err(e) => Err(io_error(
                e,
                format!("opening {}", self.shown(name).display()),
            )),
        }
    }

    /// Open the subdirectory `name`, creating it (mode `mode`) if missing.
    pub fn open_or_create_dir(&self, name: &str, mode: u32) -> Result<Dir> {
        if let Some(d) = self.open_dir(name)? {
            return Ok(d);
        }
        match self.as_owner_io(|| rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode))) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(io_error(
                    e,
                    format!("creating {}", self.shown(name).display()),
                ))
            }
        }
        self.sync()?;
        self.open_dir(name)?.ok_or_else(|| {
            io_error(
                Errno::NOENT,
                format!("{} vanished after creation", self.shown(name).display()),
            )
        })
    }

    /// Create a new subdirectory that nobody else can enter (mode 0700)
    /// and open it. Fails if `name` exists.
    pub fn create_private_dir(&self, name: &str) -> Result<Dir> {
        let shown = self.shown(name);
        self.as_owner_io(|| rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)))
            .map_err(|e| io_error(e, format!("creating {}", shown.display())))?;
        let made = self.open_dir(name).and_then(|dir| {
            let dir = dir.ok_or_else(|| {
                io_error(
                    Errno::NOENT,
                    format!("{} vanished after creation", shown.display()),
                )
            })?;
            dir.make_private()?;
            Ok(dir)
        });
        if made.is_err() {
            // Only if the name still is what mkdirat made: nothing else is
            // ever removed on our behalf, whatever was renamed into it.
            if let Ok(Some(st)) = self.stat(name) {
                let ours = st.st_uid == self.writer() && st.st_mode & 0o777 == 0o700;
                if ours {
                    self.remove_empty_dir(name);
                }
            }
        }
        made
    }

    /// Make a directory we just created ours alone, and check it is: the
    /// deploy user owns its parent and may have swapped the name for a
    /// directory of its own, or given the parent a default ACL or the
    /// setgid bit, which new directories inherit and pass on to every file
    /// created in them (readable or writable by the deploy user, whatever
    /// mode we set).
    fn make_private(&self) -> Result<()> {
        let shown = &self.shown;
        let fail = |e: Errno, what: &str| io_error(e, format!("{what} {}", shown.display()));
        for acl in [c"system.posix_acl_default", c"system.posix_acl_access"] {
            match self.as_owner_io(|| rfs::fremovexattr(&self.fd, acl)) {
                Ok(()) | Err(Errno::NODATA) | Err(Errno::NOTSUP) => {}
                Err(e) => return Err(fail(e, "removing ACLs of")),
            }
        }
        let st = self.stat_self()?;
        let me = self.writer();
        // Only if it is ours: never chown or chmod a directory someone swapped in.
        if st.st_uid == me {
            self.as_owner_io(|| {
                let gid = rustix::process::getegid();
                rfs::fchown(&self.fd, None, Some(gid))?;
                rfs::fchmod(&self.fd, Mode::from_raw_mode(0o700))
            })
            .map_err(|e| fail(e, "chown and chmod of"))?;
        }
        let st = self.stat_self()?;
        let empty = self.entries()?.is_empty();
        let acl = rfs::fgetxattr_query(&self.fd, c"system.posix_acl_default").is_ok();
        if st.st_uid != me || st.st_mode & 0o7077 != 0 || !empty || acl {
            return Err(Error::operational(format_args!(
                "{} was replaced right after it was created; refusing to write into it",
                shown.display()
            )));
        }
        Ok(())
    }

    /// Every name in the directory except `.` and `..`.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        read_entries(self.fd.as_fd())
            .map_err(|e| io_error(e, format!("reading {}", self.shown.display())))
    }

    /// lstat of `name`: `None` if it does not exist.
    pub fn stat(&self, name: impl AsRef<OsStr>) -> Result<Option<Stat>> {
        let name = name.as_ref();
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_error(e, format!("stat {}", self.shown(name).display()))),
        }
    }

    /// fstat of the directory itself.
    pub fn stat_self(&self) -> Result<Stat> {
        rfs::fstat(&self.fd).map_err(|e| io_error(e, format!("stat {}", self.shown.display())))
    }

    /// Open the state file `name` (see [`Access`]); `None` if it does not
    /// exist and `how` does not create it. Opened without following a
    /// symlink and without blocking (a FIFO planted under the name must not
    /// hang us), then judged by what was opened: anything but a regular file
    /// with one link, owned by us or by ROOT's owner, is refused. A second
    /// link could make our writes land in a file outside ROOT.
    pub fn open_file(&self, name: &str, how: Access) -> Result<Option<File>> {
        let shown = self.shown(name);
        let base = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let flags = match how {
            Access::Read => OFlags::RDONLY,
            Access::ReadWrite => OFlags::RDWR | OFlags::CREATE,
            Access::Append => OFlags::RDWR | OFlags::APPEND | OFlags::CREATE,
            Access::CreateNew => {
                match self.as_owner_io(|| rfs::unlinkat(&self.fd, name, AtFlags::empty())) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(io_error(e, format!("removing {}", shown.display()))),
                }
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL
            }
        };
        let open = || rfs::openat(&self.fd, name, flags | base, Mode::from_raw_mode(0o644));
        let opened = if how == Access::Read {
            open()
        } else {
            self.as_owner_io(open)
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(Errno::NOENT) if how == Access::Read => return Ok(None),
            Err(Errno::LOOP) => {
                return Err(Error::operational(format_args!(
                    "{} is a symlink; refusing to use it (remove it by hand)",
                    shown.display()
                )))
            }
            Err(Errno::NXIO) => {
                return Err(Error::operational(format_args!(
                    "{} is not a regular file; refusing to use it (remove it by hand)",
                    shown.display()
                )))
            }
            Err(e) => return Err(io_error(e, format!("opening {}", shown.display()))),
        };
        let st = rfs::fstat(&fd).map_err(|e| io_error(e, format!("stat {}", shown.display())))?;
        let refuse = |why: String| {
            Error::operational(format_args!(
                "{} {why}; refusing to use it (remove it by hand)",
                shown.display()
            ))
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(refuse("is not a regular file".into()));
        }
        if st.st_nlink != 1 {
            return Err(refuse(format!(
                "has {} links (a hard link to another file?)",
                st.st_nlink
            )));
        }
        if !self.trust.allows(st.st_uid) && st.st_uid != self.writer() {
            return Err(refuse(format!("is owned by uid {}", st.st_uid)));
        }
        Ok(Some(File::from(fd)))
    }

    /// `renameat` within this directory.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.as_owner_io(|| rfs::renameat(&self.fd, from, &self.fd, to))
            .map_err(|e| {
                io_error(
                    e,
                    format!("renaming {} to {to}", self.shown(from).display()),
                )
            })
    }

    /// Another handle on this directory.
    pub fn try_clone(&self) -> Result<Dir> {
        let fd = self.fd.try_clone().map_err(|e| {
            io_error(
                Errno::from_io_error(&e).unwrap_or(Errno::IO),
                format!("dup {}", self.shown.display()),
            )
        })?;
        Ok(Dir {
            fd,
            shown: self.shown.clone(),
            trust: self.trust,
            act: Act::known(self.act()),
        })
    }

    /// Create the new subdirectory `name` with exactly `mode` (not what
    /// the umask leaves of it) and open it.
    pub fn create_dir(&self, name: &str, mode: u32) -> Result<Dir> {
        let shown = self.shown(name);
        self.as_owner_io(|| rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)))
            .map_err(|e| io_error(e, format!("creating {}", shown.display())))?;
        let dir = self.open_dir(name)?.ok_or_else(|| {
            io_error(
                Errno::NOENT,
                format!("{} vanished after creation", shown.display()),
            )
        })?;
        dir.as_owner_io(|| rfs::fchmod(&dir.fd, Mode::from_raw_mode(mode)))
            .map_err(|e| io_error(e, format!("chmod of {}", shown.display())))?;
        Ok(dir)
    }

    /// Create the symlink `name` -> `target` (a new name).
    pub fn symlink(&self, target: &str, name: &str) -> Result<()> {
        self.as_owner_io(|| rfs::symlinkat(target, &self.fd, name))
            .map_err(|e| {
                io_error(
                    e,
                    format!("creating symlink {}", self.shown(name).display()),
                )
            })
    }

    /// `renameat2(RENAME_NOREPLACE)` of `from` here to `to` in `dest`,
    /// both named from their handles: the raw errno, so callers can tell
    /// "taken" (EEXIST) and "another file system" (EXDEV) from a failure.
    /// Between directories written with different rights the answer is
    /// EXDEV: the caller copies instead, reading with the one's rights and
    /// writing with the other's.
    pub fn move_to(&self, from: &str, dest: &Dir, to: &str) -> std::result::Result<(), Errno> {
        if self.act() != dest.act() {
            return Err(Errno::XDEV);
        }
        self.as_owner_io(|| {
            rfs::renameat_with(&self.fd, from, &dest.fd, to, RenameFlags::NOREPLACE)
        })
    }

    /// Open the regular file `name` for reading, without following a
    /// symlink or blocking on a FIFO, judged by what was opened.
    pub fn open_read(&self, name: &str) -> Result<File> {
        self.open_read_stat(name)?.map(|(f, _)| f).ok_or_else(|| {
            io_error(
                Errno::NOENT,
                format!("opening {}", self.shown(name).display()),
            )
        })
    }

    /// [`Self::open_read`] with what the open file's fstat said; `None` if
    /// `name` does not exist.
    pub fn open_read_stat(&self, name: &str) -> Result<Option<(File, Stat)>> {
        let shown = self.shown(name);
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rfs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io_error(e, format!("opening {}", shown.display()))),
        };
        let st = rfs::fstat(&fd).map_err(|e| io_error(e, format!("stat {}", shown.display())))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::operational(format_args!(
                "{} is not a regular file",
                shown.display()
            )));
        }
        Ok(Some((File::from(fd), st)))
    }

    /// `renameat2(RENAME_NOREPLACE)` within this directory: the raw errno,
    /// so callers can tell "taken" (EEXIST) from a failure.
    pub fn rename_noreplace(&self, from: &str, to: &str) -> std::result::Result<(), Errno> {
        self.as_owner_io(|| {
            rfs::renameat_with(&self.fd, from, &self.fd, to, RenameFlags::NOREPLACE)
        })
    }

    /// Remove the file or empty name `name` (not a directory); missing is fine.
    pub fn unlink(&self, name: &str) -> Result<()> {
        match self.as_owner_io(|| rfs::unlinkat(&self.fd, name, AtFlags::empty())) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io_error(
                e,
                format!("removing {}", self.shown(name).display()),
            )),
        }
    }

    /// Remove the directory `name` if it is empty (best effort: a
    /// non-empty directory or anything else is left as it is).
    pub fn remove_empty_dir(&self, name: &str) {
        if self
            .as_owner_io(|| rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR))
            .is_ok()
        {
            let _ = self.sync();
        }
    }

    /// Delete `name` and everything below it, through handles only: each
    /// directory is opened with `O_NOFOLLOW` from its parent's handle and
    /// emptied by `unlinkat`, so a symlink or a directory exchanged into the
    /// tree meanwhile is removed as a name, never followed.
    ///
    /// Each directory's entries are removed with the rights of the first
    /// directory on the way down that another user owns (see
    /// [`crate::fs::creds`]): whatever is raced into the tree, root deletes no
    /// more than that owner could.
    pub fn remove_tree(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = name.as_ref();
        self.as_owner_io(|| remove_tree_at(self.fd.as_fd(), &cstring(name), 0)).map_err(|e| {
            let shown = self.shown(name);
            match e {
                Errno::XDEV => Error::operational(format_args!(
                    "removing {}: it holds a mount point, whose contents are never deleted; unmount it and retry",
                    shown.display()
                )),
                Errno::NAMETOOLONG => Error::operational(format_args!(
                    "removing {}: nested deeper than {MAX_DEPTH} levels; remove it by hand",
                    shown.display()
                )),
                e => io_error(e, format!("removing {}", shown.display())),
            }
        })
    }

    /// fsync the directory: a rename or create in it is durable only then.
    pub fn sync(&self) -> Result<()> {
        rfs::fsync(&self.fd).map_err(|e| io_error(e, format!("fsync {}", self.shown.display())))
    }

    /// A path through which a child process can use this very directory
    /// as its working directory: `/proc/self/fd/N` in the child names the
    /// open directory it inherited (the kernel does not look the old path up
    /// again). The handle must stay open until the child has started.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Open a directory outside any app root by its path, not following a
    /// symlink in its last component; `None` if it does not exist. As in
    /// ROOT, files in it are trusted when owned by root, by us or by the
    /// directory's owner.
    pub fn open_path(path: &Path) -> Result<Option<Dir>> {
        match open_trusted(path) {
            Ok(dir) => Ok(Some(dir)),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => Err(Error::operational(format_args!(
                "{} is not a directory (symlinks are refused)",
                path.display()
            ))),
            Err(e) => Err(io_error(e, format!("opening {}", path.display()))),
        }
    }

    pub(super) fn child(&self, fd: OwnedFd, name: impl AsRef<Path>) -> Dir {
        let parent = self.act();
        // Below another user's directory the answer is known already.
        let act = if parent.is_some() || !creds::is_root() {
            Act::known(parent)
        } else {
            Act {
                parent,
                here: std::sync::OnceLock::new(),
            }
        };
        Dir {
            fd,
            shown: self.shown(name),
            trust: self.trust,
            act,
        }
    }

    /// Whose rights writes in this directory are made with.
    pub fn act(&self) -> Option<Owner> {
        *self.act.here.get_or_init(|| {
            // An fstat that fails leaves ROOT's owner's rights, never more
            // than what the parent's owner may do.
            match rfs::fstat(&self.fd) {
                Ok(st) => creds::for_dir(self.act.parent, st.st_uid, st.st_gid),
                Err(_) => self.act.parent.or(Some(Owner {
                    uid: self.trust.root_owner,
                    gid: self.trust.root_owner,
                })),
            }
        })
    }

    /// The uid that files this process creates here belong to.
    pub fn writer(&self) -> u32 {
        self.act().map_or(self.trust.me, |o| o.uid)
    }

    /// Run a write in this directory with its owner's rights.
    pub fn as_owner<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        creds::acting(self.act(), f)
    }

    pub(super) fn as_owner_io<T>(
        &self,
        f: impl FnOnce() -> rustix::io::Result<T>,
    ) -> rustix::io::Result<T> {
        creds::acting_io(self.act(), f)
    }
}

/// How deep [`Dir::remove_tree`] goes before giving up (each level holds
/// one open handle). `stage` refuses trees deeper than half of it, so every
/// staged release can be pruned.
pub const MAX_DEPTH: usize = 256;

fn remove_tree_at(parent: BorrowedFd<'_>, name: &CStr, depth: usize) -> rustix::io::Result<()> {
    remove_tree_on(parent, name, depth, mount_of(parent)?)
}

/// Which mount a directory is on: the mount id where the kernel reports it
/// (statx, Linux 5.8+), else the device. A bind mount of a directory of the
/// same file system has the same device, but not the same mount id.
fn mount_of(fd: BorrowedFd<'_>) -> rustix::io::Result<(u64, u64)> {
    use rfs::StatxFlags;
    match rfs::statx(fd, c"", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID) {
        Ok(x) if x.stx_mask & StatxFlags::MNT_ID.bits() != 0 => Ok((
            x.stx_mnt_id,
            rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
        )),
        _ => Ok((0, rfs::fstat(fd)?.st_dev)),
    }
}

/// Remove a tree that lies on the mount `mount`: a directory on another is
/// a mount point (an operator's bind mount, say), and its contents are
/// never deleted; the removal stops with EXDEV instead.
fn remove_tree_on(
    parent: BorrowedFd<'_>,
    name: &CStr,
    depth: usize,
    mount: (u64, u64),
) -> rustix::io::Result<()> {
    let fd = match rfs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        // A file, a symlink or anything else: remove the name itself.
        Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
            return match rfs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if depth >= MAX_DEPTH {
        return Err(Errno::NAMETOOLONG);
    }
    if mount_of(fd.as_fd())? != mount {
        return Err(Errno::XDEV);
    }
    // Below a directory another user owns, as that user (root's own
    // directories stay root's: only root could have put them there).
    let st = rfs::fstat(&fd)?;
    let inner = creds::for_dir(creds::current(), st.st_uid, st.st_gid);
    creds::acting_io(inner, || empty_tree(fd.as_fd(), depth, mount))?;
    drop(fd);
    match rfs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Remove everything in the open directory `fd` (see [`remove_tree_on`]).
fn empty_tree(fd: BorrowedFd<'_>, depth: usize, mount: (u64, u64)) -> rustix::io::Result<()> {
    for entry in read_entries(fd)? {
        let child = cstring(&entry.name);
        if entry.kind == FileType::Directory || entry.kind == FileType::Unknown {
            remove_tree_on(fd, &child, depth + 1, mount)?;
            continue;
        }
        match rfs::unlinkat(fd, child.as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            // Replaced by a directory since readdir: descend after all.
            Err(Errno::ISDIR) => remove_tree_on(fd, &child, depth + 1, mount)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every name in the open directory `fd` except `.` and `..`.
pub(crate) fn read_entries(fd: BorrowedFd<'_>) -> rustix::io::Result<Vec<Entry>> {
    let mut dir = rfs::Dir::read_from(fd)?;
    let mut out = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(Entry {
            name: OsString::from_vec(name.to_vec()),
            kind: entry.file_type(),
        });
    }
    Ok(out)
}

pub(crate) fn cstring(name: &OsStr) -> CString {
    // Names come from readdir or from validated ids: no NUL inside.
    CString::new(name.as_bytes()).expect("file names hold no NUL")
}

/// Whether the open directory `inner` is `outer` or lies below it, found
/// by walking `..` up from `inner`'s handle and comparing inodes: no path
/// is resolved again, so a rename meanwhile cannot fool the answer.
pub fn contains(outer: BorrowedFd<'_>, inner: BorrowedFd<'_>) -> rustix::io::Result<bool> {
    let id = |st: Stat| (st.st_dev, st.st_ino);
    let want = id(rfs::fstat(outer)?);
    let mut here = rfs::openat(inner, c".", DIR_FLAGS, Mode::empty())?;
    // Bounded: a directory tree is never this deep.
    for _ in 0..4096 {
        let now = id(rfs::fstat(&here)?);
        if now == want {
            return Ok(true);
        }
        let up = rfs::openat(&here, c"..", DIR_FLAGS, Mode::empty())?;
        if id(rfs::fstat(&up)?) == now {
            return Ok(false); // `/`: its `..` is itself
        }
        here = up;
    }
    Ok(false)
}

/// An errno from a file operation as an error: resource and permission
/// failures are operational (exit 1), never "bad input".
pub fn io_error(e: Errno, what: String) -> Error {
    Error::op_ctx(std::io::Error::from(e), what)
}

/// Open the directory `path` (its last component not followed), trusting
/// files owned by us or by the directory's owner.
pub(super) fn open_trusted(path: &Path) -> rustix::io::Result<Dir> {
    let fd = rfs::open(path, DIR_FLAGS, Mode::empty())?;
    let st = rfs::fstat(&fd)?;
    Ok(Dir {
        fd,
        shown: path.to_path_buf(),
        trust: Trust {
            me: rustix::process::geteuid().as_raw(),
            root_owner: st.st_uid,
        },
        act: Act::known(creds::for_dir(None, st.st_uid, st.st_gid)),
    })
}
