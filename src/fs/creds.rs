//! Root acts on a tree with the rights of the tree's owner.
//!
//! releasectl runs as root over app roots that an unprivileged user owns
//! and may change at any instant: rename a directory root is working in,
//! exchange it with another (`renameat2(RENAME_EXCHANGE)`), plant a
//! symlink. Directory handles stop such a race from leading root *outside*
//! the tree, but not from pointing root at something *inside* it that the
//! user could not touch themselves (a release root staged, another user's
//! uploads in `shared/`). So whenever root writes, renames or deletes below
//! a directory another user owns, it does so with that user's credentials:
//! whatever is raced into place, root can then do no more than its owner.
//!
//! The credentials are the calling thread's own (Linux keeps uids per
//! thread; rustix's `set_thread_*` calls are the raw syscalls, not the
//! libc wrappers that change every thread). Only the effective ids change:
//! the real and saved uid stay 0, so the process can return to root, and
//! the owner cannot signal or trace it meanwhile (`kill` checks the real
//! and saved uid; the kernel marks the process non-dumpable when its
//! effective uid changes). The effective capabilities go with the
//! effective uid 0 and come back with it.

use crate::error::{Error, Result};
use rustix::process::{Gid, Uid};
use std::cell::Cell;

/// Whose rights a write below some directory is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

thread_local! {
    /// The owner this thread is acting as right now; `None`: itself.
    static ACTING: Cell<Option<Owner>> = const { Cell::new(None) };
}

/// Whether this process may change its credentials at all: only root
/// (euid 0) acts as anyone else; an unprivileged run has only its own
/// rights, which is what the rule asks for.
pub fn is_root() -> bool {
    // The real uid, not the effective one: a thread acting as an owner is
    // still a root process. It never changes, so it is asked once.
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| rustix::process::getuid().is_root())
}

/// Whom a directory's contents are written as, given its owner and the
/// rule of its parent (`parent`: `None` when the parent is written as
/// ourselves). Below a directory another user owns, everything is written
/// as that user, whoever owns what lies further down: never again as root.
pub fn for_dir(parent: Option<Owner>, uid: u32, gid: u32) -> Option<Owner> {
    if parent.is_some() {
        return parent;
    }
    (is_root() && uid != 0).then_some(Owner { uid, gid })
}

/// Run `f` with the credentials `who` (`None`: root's own), and return to
/// the credentials this thread had before.
pub fn acting<T>(who: Option<Owner>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let before = ACTING.with(Cell::get);
    if before == who || !is_root() {
        return f();
    }
    switch(who).map_err(|e| {
        Error::operational(format_args!(
            "cannot act as {}: {e}",
            who.map_or("root".to_string(), |o| format!("uid {}", o.uid))
        ))
    })?;
    let out = f();
    restore(before);
    out
}

/// [`acting`] for raw system calls (an `Errno` or an `io::Error`).
pub fn acting_io<T, E: From<rustix::io::Errno>>(
    who: Option<Owner>,
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let before = ACTING.with(Cell::get);
    if before == who || !is_root() {
        return f();
    }
    switch(who)?;
    let out = f();
    restore(before);
    out
}

/// Failing to return is not something to carry on from: the caller would
/// then do root's own work with someone else's rights, or believe it acts
/// as an owner while it is root.
fn restore(before: Option<Owner>) {
    if let Err(e) = switch(before) {
        crate::log::warn(&format!("cannot restore credentials: {e}"));
        std::process::abort();
    }
}

/// The owner this thread acts as now, if any.
pub fn current() -> Option<Owner> {
    ACTING.with(Cell::get)
}

fn switch(who: Option<Owner>) -> rustix::io::Result<()> {
    use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
    if ACTING.with(Cell::get).is_none() {
        // Leaving root's own credentials: keep its groups to come back to.
        let groups = rustix::process::getgroups()?;
        ROOT_GROUPS.with(|g| *g.borrow_mut() = groups);
    }
    // Back to root first: only euid 0 may set groups and gids.
    set_thread_res_uid(None, Uid::from_raw(0), None)?;
    match who {
        Some(o) => {
            let gid = Gid::from_raw(o.gid);
            set_thread_groups(&[gid])?;
            set_thread_res_gid(None, gid, None)?;
            set_thread_res_uid(None, Uid::from_raw(o.uid), None)?;
        }
        None => {
            set_thread_res_gid(None, Gid::from_raw(0), None)?;
            ROOT_GROUPS.with(|g| set_thread_groups(&g.borrow()))?;
        }
    }
    ACTING.with(|a| a.set(who));
    Ok(())
}

thread_local! {
    /// Root's supplementary groups, saved when this thread last left them.
    static ROOT_GROUPS: std::cell::RefCell<Vec<Gid>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule itself: below a directory another user owns, never root again.
    #[test]
    fn below_another_users_directory_everything_is_theirs() {
        let u = Owner {
            uid: 1000,
            gid: 1000,
        };
        assert_eq!(for_dir(Some(u), 0, 0), Some(u));
        assert_eq!(for_dir(Some(u), 2000, 2000), Some(u));
        if is_root() {
            assert_eq!(for_dir(None, 0, 0), None);
            assert_eq!(for_dir(None, 1000, 1000), Some(u));
        } else {
            assert_eq!(for_dir(None, 1000, 1000), None);
        }
    }

    /// A file created while acting belongs to the owner, and the thread is
    /// root again afterwards (run as root; unprivileged runs act as
    /// themselves, which the second half checks).
    #[test]
    fn acting_writes_as_the_owner_and_returns() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Owner {
            uid: 65534,
            gid: 65534,
        };
        let made = dir.path().join("made");
        if is_root() {
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )
            .unwrap();
        }
        acting(Some(owner), || {
            std::fs::write(&made, b"x").map_err(|e| Error::op_ctx(e, "writing"))
        })
        .unwrap();
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&made).unwrap());
        if is_root() {
            assert_eq!(uid, 65534);
            assert!(rustix::process::geteuid().is_root());
            assert_eq!(current(), None);
            // And nothing the owner may not do: a root-only directory.
            let private = dir.path().join("private");
            std::fs::create_dir(&private).unwrap();
            std::fs::set_permissions(
                &private,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .unwrap();
            let denied = acting(Some(owner), || {
                std::fs::write(private.join("f"), b"x").map_err(|e| Error::op_ctx(e, "writing"))
            });
            assert!(
                denied.is_err(),
                "wrote into a root-only directory as uid 65534"
            );
        } else {
            assert_eq!(uid, rustix::process::geteuid().as_raw());
        }
    }
}
