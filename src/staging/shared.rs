//! Shared paths: `storage/`, `log/`, `.env` live in `ROOT/shared/` and
//! every release links to them (Capistrano's `linked_dirs`/`linked_files`).
//!
//! At stage time, once the tree is written into its temp directory and
//! before it is flushed and published, each shared path P of the new
//! release becomes a relative symlink `P -> ../../shared/P` (one more `../`
//! per level of P). When `shared/P` does not exist yet, it is seeded: the
//! release's own copy is moved there, or, for a directory with nothing to
//! seed, an empty directory is made. When it exists, whatever the release
//! ships at P is discarded.
//!
//! `shared/` belongs to the deploy user, who may plant or swap anything in
//! it while root stages. Root never opens anything in it but directories
//! (one name at a time, `O_NOFOLLOW`, from a handle); it creates
//! directories, renames the seed in with `RENAME_NOREPLACE`, and never
//! reads, writes or deletes a file there. What the archive ships at P is
//! only ever removed as a name: a symlink there is never followed and
//! never used as a seed.
//!
//! `[shared] owner` and `mode` ([`Ownership`]) are given to the shared
//! directories releasectl creates or seeds, never to what `shared/`
//! already holds: a seeded tree is walked bottom-up through handles opened
//! without following symlinks (`fchown`/`fchmod`), so the new owner never
//! holds a directory root has yet to walk. Root gives files away only in
//! a `shared/` of its own: below another user's `shared/` it writes with
//! that user's rights, and an `owner` other than that user is refused.
//!
//! Everything that can be refused is refused before anything changes:
//! [`check`] before the temp tree exists, [`plan`] before `shared/` is
//! touched (the caller's temp tree is removed on the way out).

use crate::config::shared::{Kind, Ownership, SharedPath, SHARED};
use crate::error::{usage, Error, Result};
use crate::fs::creds;
use crate::fs::dir::{io_error, Access, Dir};
use crate::fs::root::RootDir;
use crate::state::record;
use crate::state::record::{Item, Manifest};
use rustix::fs::{FileType, Mode};
use rustix::io::Errno;
use std::os::fd::AsFd;

/// Before staging creates anything: `shared/`, and every directory on the
/// way to a shared path in it, must be a real directory where it exists
/// (a symlink there is refused, exit 2, never followed).
pub fn check(root: &RootDir, paths: &[SharedPath], own: &Ownership) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let shared = open_shared(root)?;
    check_owner(root, shared.as_ref(), own)?;
    for p in paths {
        shared_state(shared.as_ref(), p)?;
    }
    if !creds::is_root() {
        check_creatable(root, shared.as_ref(), paths)?;
    }
    Ok(())
}

/// For `check`: each shared path's state, as (what, outcome). A missing
/// path is fine when whoever stages can create it (the first stage seeds
/// it); when members stage (`releases/` writable by others) into a
/// `shared/` they cannot write, it fails, naming what root must make once.
pub fn preflight(
    root: &RootDir,
    paths: &[SharedPath],
) -> Vec<(String, std::result::Result<String, String>)> {
    let shared = match open_shared(root) {
        Ok(s) => s,
        Err(e) => return vec![(SHARED.to_string(), Err(e.one_line()))],
    };
    let members_stage = match root.dir().stat(crate::fs::root::RELEASES) {
        Ok(Some(st)) => st.st_mode & 0o022 != 0,
        _ => false,
    };
    let owner_of = |d: &Dir| d.stat_self().ok().map(|st| st.st_uid);
    paths
        .iter()
        .map(|p| {
            let what = format!("{SHARED}/{}", p.path);
            let at = match shared.as_ref() {
                None => root.dir().try_clone().map(Some),
                Some(s) => missing_at(s, p),
            };
            let outcome = match at {
                Err(e) => Err(e.one_line()),
                Ok(None) => Ok("exists".to_string()),
                Ok(Some(dir)) if members_stage && owner_of(&dir) == Some(0) => Err(format!(
                    "missing, and members stage here but cannot create it in {}: make it \
                     once as root (README, \"Without root\": shared paths)",
                    dir.shown("").display()
                )),
                Ok(Some(_)) => Ok("not created yet: the first stage seeds it".to_string()),
            };
            (what, outcome)
        })
        .collect()
}

/// A member staging into a root-owned app root cannot create `shared/` or a
/// shared path root's `shared/` lacks: say so before anything is written,
/// naming what is missing and who must make it once (exit 1), instead of
/// failing halfway with a bare EACCES.
fn check_creatable(root: &RootDir, shared: Option<&Dir>, paths: &[SharedPath]) -> Result<()> {
    for p in paths {
        let at = match shared {
            None => Some(root.dir().try_clone()?),
            Some(s) => missing_at(s, p)?,
        };
        let Some(dir) = at else { continue };
        let writable = rustix::fs::accessat(
            &dir,
            ".",
            rustix::fs::Access::WRITE_OK,
            rustix::fs::AtFlags::EACCESS,
        )
        .is_ok();
        if !writable {
            return Err(Error::operational(format_args!(
                "{}: {} does not exist and this user cannot create it in {}; its owner \
                 must create it once (README, \"Without root\": shared paths)",
                p.shown(),
                root.dir().shown(SHARED).join(&p.path).display(),
                dir.shown("").display()
            )));
        }
    }
    Ok(())
}

/// Root gives files away only in its own `shared/`: below another user's,
/// it writes with that user's rights, and could not (nor should) hand
/// anything to a third user (exit 1, before anything is written).
fn check_owner(root: &RootDir, shared: Option<&Dir>, own: &Ownership) -> Result<()> {
    let Some(want) = &own.owner else {
        return Ok(());
    };
    // A `shared/` still to be made is made with ROOT's rule.
    let acting = match shared {
        Some(dir) => dir.act(),
        None => root.dir().act(),
    };
    match acting {
        Some(o) if o.uid != want.uid => Err(Error::operational(format_args!(
            "[shared] owner {} (uid {}): {} is written with the rights of uid {}, who owns it \
             or the app root, and cannot be given to another user; make {2} and the app root \
             root's (`chown root: DIR`) or set owner to uid {3}",
            want.name,
            want.uid,
            root.dir().shown(SHARED).display(),
            o.uid
        ))),
        _ => Ok(()),
    }
}

/// What becomes of one shared path.
enum Action {
    /// `shared/P` exists: discard what the release ships, link.
    Link,
    /// Move the release's own copy to `shared/P`, then link.
    Seed,
    /// A directory with nothing to seed: make `shared/P` empty, then link.
    Empty,
}

/// Decide every shared path's fate against the written temp tree `tree`
/// and `shared/`, changing nothing: a shared file with nothing to seed, a
/// type that does not match, or a symlink or file on the way to a shared
/// path in the release is refused (exit 2) before `shared/` is touched.
fn plan(shared: Option<&Dir>, tree: &Dir, paths: &[SharedPath]) -> Result<Vec<Action>> {
    let mut actions = Vec::new();
    for p in paths {
        let exists = shared_state(shared, p)?;
        let shipped = release_state(tree, p)?;
        let action = match (exists, shipped) {
            (true, _) => Action::Link,
            (false, Some(ft)) if ft == want(p.kind) => Action::Seed,
            (false, Some(FileType::Symlink)) if p.kind == Kind::Dir => Action::Empty,
            (false, None) if p.kind == Kind::Dir => Action::Empty,
            (false, Some(FileType::Symlink)) => {
                return Err(usage(format!(
                    "shared file {}: {SHARED}/{0} does not exist and the release's {0} is a \
                     symlink, which is never used as a seed; create {SHARED}/{0} first",
                    p.path.escape_debug()
                )))
            }
            (false, None) => {
                return Err(usage(format!(
                    "shared file {}: {SHARED}/{0} does not exist and the release has no {0} \
                     to seed it from; create {SHARED}/{0} first",
                    p.path.escape_debug()
                )))
            }
            (false, Some(ft)) => {
                return Err(usage(format!(
                    "shared {} {}: the release ships a {} there, nothing to seed {SHARED}/{1} from",
                    p.kind.noun(),
                    p.path.escape_debug(),
                    kind_noun(ft)
                )))
            }
        };
        actions.push(action);
    }
    Ok(actions)
}

/// Turn every shared path of the temp tree `tree` into its link, seeding
/// `shared/` where it lacks a path, and make the manifest say what the
/// release now holds: the link, and nothing below it.
pub fn link(
    root: &RootDir,
    tree: &Dir,
    paths: &[SharedPath],
    own: &Ownership,
    m: &mut Manifest,
) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let shared = open_shared(root)?;
    check_owner(root, shared.as_ref(), own)?;
    let actions = plan(shared.as_ref(), tree, paths)?;
    // Nothing was refused: from here on `shared/` may change.
    let shared = match shared {
        Some(dir) => dir,
        None => root.dir().open_or_create_dir(SHARED, 0o755)?,
    };
    for (p, action) in paths.iter().zip(actions) {
        let (name, parents) = p.parts.split_last().expect("a path has a component");
        let parent = release_parent(tree, p, m)?;
        match action {
            Action::Link => {}
            Action::Seed => {
                if seed(&shared, &parent, p)? && p.kind == Kind::Dir {
                    give(&shared_parent(&shared, parents)?, name, own)?;
                }
            }
            Action::Empty => {
                let dir = shared_parent(&shared, parents)?;
                // With the rights of the directory's owner (crate::fs::creds),
                // like every write in shared/.
                let made = creds::acting_io(dir.act(), || {
                    rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755))
                });
                match made {
                    Ok(()) => give(&dir, name, own)?,
                    Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(io_error(
                            e,
                            format!("creating {}", dir.shown(name).display()),
                        ))
                    }
                }
                dir.sync()?;
                crate::log::info(&format!("created empty {SHARED}/{}", p.path));
            }
        }
        // What the archive shipped here (a seed already moved away, or a
        // copy shared/ makes redundant) goes, as a name: a symlink is
        // removed, never followed.
        parent.remove_tree(name)?;
        parent.symlink(&p.link_target(), name)?;
        m.remove(&p.key());
        m.put(
            &p.key(),
            Item::Symlink {
                target: record::encode(&[p.link_target().as_bytes()]),
            },
        );
    }
    // One flush of the temp tree follows; a shared/ on another file system
    // (a mount) needs its own.
    let (ours, theirs) = (tree.stat_self()?, shared.stat_self()?);
    if ours.st_dev != theirs.st_dev {
        rustix::fs::syncfs(shared.as_fd())
            .map_err(|e| io_error(e, format!("flushing {}", shared.shown("").display())))?;
    }
    Ok(())
}

/// Give the directory `name` of `dir` (just created or seeded) and every
/// directory and file in it `own`'s owner and mode: directories get the
/// mode, files the mode without its execute bits unless they had one;
/// symlinks and files with other hard links are left as they are. Bottom-up, each through a handle opened
/// without following symlinks, and with the rights `dir` is written with.
fn give(dir: &Dir, name: &str, own: &Ownership) -> Result<()> {
    if own.owner.is_none() && own.mode.is_none() {
        return Ok(());
    }
    let top = dir
        .open_dir(name)?
        .ok_or_else(|| vanished(&dir.shown(name)))?;
    let shown = dir.shown(name);
    let mut linked = 0;
    dir.as_owner(|| {
        give_tree(top.as_fd(), own, 0, &mut linked)
            .map_err(|e| io_error(e, format!("giving {} to its owner", shown.display())))
    })?;
    if linked > 0 {
        crate::log::warn(&format!(
            "{linked} file(s) in {} have other hard links and were left as they are",
            shown.display()
        ));
    }
    crate::log::info(&format!("gave {} to {}", shown.display(), describe(own)));
    Ok(())
}

fn describe(own: &Ownership) -> String {
    let who = own
        .owner
        .as_ref()
        .map(|o| format!("{} (uid {})", o.name, o.uid));
    let mode = own.mode.map(|m| format!("mode {m:04o}"));
    [who, mode]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Children first, then `fd` itself: a directory is handed over only once
/// everything in it has been.
fn give_tree(
    fd: std::os::fd::BorrowedFd<'_>,
    own: &Ownership,
    depth: usize,
    linked: &mut usize,
) -> rustix::io::Result<()> {
    use rustix::fs::{openat, OFlags};
    if depth > crate::fs::dir::MAX_DEPTH {
        return Err(Errno::LOOP);
    }
    for entry in crate::fs::dir::read_entries(fd)? {
        let name = entry.name.as_os_str();
        match entry.kind {
            FileType::Symlink => continue,
            FileType::Directory => {
                let sub = openat(fd, name, crate::fs::dir::DIR_FLAGS, Mode::empty())?;
                give_tree(sub.as_fd(), own, depth + 1, linked)?;
            }
            _ => {
                let flags = OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC;
                let file = match openat(fd, name, flags, Mode::empty()) {
                    Ok(f) => f,
                    // A symlink the directory entry did not say was one.
                    Err(Errno::LOOP) => continue,
                    Err(e) => return Err(e),
                };
                let st = rustix::fs::fstat(&file)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    continue;
                }
                // A file with other names (a hard link in the archive, or
                // to an older release by `dedup = "hardlink"`) is left as
                // it is: giving it away would give those names too.
                if st.st_nlink > 1 {
                    *linked += 1;
                    continue;
                }
                apply(file.as_fd(), st.st_mode, false, own)?;
            }
        }
    }
    let st = rustix::fs::fstat(fd)?;
    apply(fd, st.st_mode, true, own)
}

fn apply(
    fd: std::os::fd::BorrowedFd<'_>,
    old: u32,
    is_dir: bool,
    own: &Ownership,
) -> rustix::io::Result<()> {
    if let Some(o) = &own.owner {
        rustix::fs::fchown(
            fd,
            Some(rustix::process::Uid::from_raw(o.uid)),
            Some(rustix::process::Gid::from_raw(o.gid)),
        )?;
    }
    if let Some(mode) = own.mode {
        let mode = if is_dir || old & 0o111 != 0 {
            mode
        } else {
            mode & !0o111
        };
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

/// `shared/`, if it exists; a symlink or file there is refused (exit 2).
fn open_shared(root: &RootDir) -> Result<Option<Dir>> {
    root.dir().open_dir(SHARED)
}

/// Whether `shared/P` exists (as anything: it is the deploy user's and
/// never looked into). The directories on the way must be real ones.
fn shared_state(shared: Option<&Dir>, p: &SharedPath) -> Result<bool> {
    match shared {
        None => Ok(false),
        Some(shared) => Ok(missing_at(shared, p)?.is_none()),
    }
}

/// Where staging would create something for P: the deepest directory of
/// `shared/` on its way that exists (`None`: `shared/P` exists, as
/// anything). The directories on the way must be real ones.
fn missing_at(shared: &Dir, p: &SharedPath) -> Result<Option<Dir>> {
    let (name, parents) = p.parts.split_last().expect("a path has a component");
    let mut held: Option<Dir> = None;
    for part in parents {
        let here = held.as_ref().unwrap_or(shared);
        match here.open_dir(part) {
            Ok(Some(d)) => held = Some(d),
            Ok(None) => return Ok(Some(here.try_clone()?)),
            Err(Error::Usage(_)) => {
                return Err(usage(format!(
                    "{}: {} is not a directory (symlinks on the way to a shared path are refused)",
                    p.shown(),
                    here.shown(part).display()
                )))
            }
            Err(e) => return Err(e),
        }
    }
    let last = match held {
        Some(d) => d,
        None => shared.try_clone()?,
    };
    Ok(match last.stat(name)? {
        Some(_) => None,
        None => Some(last),
    })
}

/// What the release ships at P (`None`: nothing). The directories on the
/// way must be real directories of the release or missing: a symlink
/// there would make root follow it out of the release.
fn release_state(tree: &Dir, p: &SharedPath) -> Result<Option<FileType>> {
    let (name, parents) = p.parts.split_last().expect("a path has a component");
    let mut held: Option<Dir> = None;
    let mut walked = Vec::new();
    for part in parents {
        walked.push(part.as_str());
        let here = held.as_ref().unwrap_or(tree);
        let Some(st) = here.stat(part)? else {
            return Ok(None);
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft != FileType::Directory {
            return Err(usage(format!(
                "{}: the release's {} is a {}; a shared path cannot lie below it",
                p.shown(),
                walked.join("/"),
                kind_noun(ft)
            )));
        }
        held = Some(
            here.open_dir(part)?
                .ok_or_else(|| vanished(&here.shown(part)))?,
        );
    }
    let here = held.as_ref().unwrap_or(tree);
    Ok(here
        .stat(name)?
        .map(|st| FileType::from_raw_mode(st.st_mode)))
}

/// The directory of the release that holds P's link, its missing parents
/// created (mode 0755) and recorded in the manifest.
fn release_parent(tree: &Dir, p: &SharedPath, m: &mut Manifest) -> Result<Dir> {
    let parents = &p.parts[..p.parts.len() - 1];
    let mut held: Option<Dir> = None;
    for (i, part) in parents.iter().enumerate() {
        let here = held.as_ref().unwrap_or(tree);
        let next = match here.open_dir(part)? {
            Some(d) => d,
            None => {
                let d = here.create_dir(part, 0o755)?;
                let key: Vec<&[u8]> = parents[..=i].iter().map(|s| s.as_bytes()).collect();
                m.put(&key, Item::Dir { mode: 0o755 });
                d
            }
        };
        held = Some(next);
    }
    match held {
        Some(d) => Ok(d),
        None => tree.try_clone(),
    }
}

/// The directory of `shared/` that holds P, created (0755) where missing;
/// never a symlink.
fn shared_parent(shared: &Dir, parents: &[String]) -> Result<Dir> {
    let mut held: Option<Dir> = None;
    for part in parents {
        let here = held.as_ref().unwrap_or(shared);
        held = Some(here.open_or_create_dir(part, 0o755)?);
    }
    match held {
        Some(d) => Ok(d),
        None => shared.try_clone(),
    }
}

/// Move the release's own copy of P into `shared/` (renameat between the
/// two handles; a copy when `shared/` is another file system). If
/// `shared/P` appeared meanwhile, it wins and the copy is discarded
/// (`false`: nothing was seeded).
fn seed(shared: &Dir, parent: &Dir, p: &SharedPath) -> Result<bool> {
    let (name, parents) = p.parts.split_last().expect("a path has a component");
    let dest = shared_parent(shared, parents)?;
    let shown = format!("{SHARED}/{}", p.path);
    match parent.move_to(name, &dest, name) {
        Ok(()) => {}
        Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => {
            crate::log::warn(&format!(
                "{shown} appeared while staging; the release's copy is discarded"
            ));
            return Ok(false);
        }
        Err(Errno::XDEV) => {
            if !copy_seed(parent, &dest, name, p.kind)? {
                return Ok(false);
            }
        }
        Err(e) => {
            return Err(io_error(
                e,
                format!("moving the release's {} to {shown}", p.path),
            ));
        }
    }
    dest.sync()?;
    crate::log::info(&format!("seeded {shown} from the release"));
    Ok(true)
}

/// The seed across file systems: copied through handles into a private
/// temp name in `shared/`, then renamed into place without replacing
/// (`false`: `shared/P` appeared meanwhile and won).
fn copy_seed(from: &Dir, dest: &Dir, name: &str, kind: Kind) -> Result<bool> {
    let tmp = format!(".seed-{}-{name}", std::process::id());
    // What this process created under `tmp`, by inode: the only thing the
    // cleanup below may remove (the name is the deploy user's to swap).
    let created: Option<(u64, u64)>;
    let made = match kind {
        Kind::Dir => {
            let src = from
                .open_dir(name)?
                .ok_or_else(|| vanished(&from.shown(name)))?;
            let out = dest.create_private_dir(&tmp)?;
            let st = out.stat_self()?;
            created = Some((st.st_dev, st.st_ino));
            let mode = src.stat_self()?.st_mode & 0o1777;
            // Written with the rights of `shared/`'s owner; the release's
            // copy is read with ours (see crate::fs::creds).
            dest.as_owner(|| {
                crate::staging::copy::copy_tree(
                    src.as_fd(),
                    out.as_fd(),
                    &from.shown(name),
                    &mut Vec::new(),
                    &mut Manifest::default(),
                )
            })
            .and_then(|()| {
                rustix::fs::fchmod(&out, Mode::from_raw_mode(mode))
                    .map_err(|e| io_error(e, format!("chmod {}", dest.shown(&tmp).display())))
            })
        }
        Kind::File => {
            let mut src = from.open_read(name)?;
            let mode = rustix::fs::fstat(&src)
                .map_err(|e| io_error(e, format!("stat {}", from.shown(name).display())))?
                .st_mode
                & 0o777;
            let mut out = dest
                .open_file(&tmp, Access::CreateNew)?
                .expect("CreateNew creates");
            let st = rustix::fs::fstat(&out)
                .map_err(|e| io_error(e, format!("stat {}", dest.shown(&tmp).display())))?;
            created = Some((st.st_dev, st.st_ino));
            crate::fs::bytes::copy_hashing(&mut src, &mut out)
                .map_err(|e| {
                    Error::op_ctx(e, format_args!("copying {}", from.shown(name).display()))
                })
                .and_then(|_| {
                    rustix::fs::fchmod(&out, Mode::from_raw_mode(mode))
                        .map_err(|e| io_error(e, format!("chmod {}", dest.shown(&tmp).display())))
                })
        }
    };
    let placed = made.and_then(|()| match dest.move_to(&tmp, dest, name) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => {
            crate::log::warn(&format!(
                "{} appeared while staging; the release's copy is discarded",
                dest.shown(name).display()
            ));
            Ok(false)
        }
        Err(e) => Err(io_error(
            e,
            format!("renaming {}", dest.shown(&tmp).display()),
        )),
    });
    let still_ours = dest
        .stat(&tmp)
        .ok()
        .flatten()
        .is_some_and(|st| Some((st.st_dev, st.st_ino)) == created);
    if still_ours {
        let _ = dest.remove_tree(&tmp);
    }
    placed
}

fn want(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

fn kind_noun(ft: FileType) -> &'static str {
    match ft {
        FileType::Directory => "directory",
        FileType::RegularFile => "file",
        FileType::Symlink => "symlink",
        _ => "special file",
    }
}

fn vanished(path: &std::path::Path) -> Error {
    io_error(Errno::NOENT, format!("{} vanished", path.display()))
}
