//! When each release was staged: what "newest" means for `list` and
//! `prune`. An app writing into its release changes the release
//! directory's modification time; it never changes this record.
//!
//! `stage` records a release as the file `releases/.staged/<id>`: its
//! modification time is the staging time (set by us), so the order is read
//! with one `lstat` per release; its content repeats it, with the uid that
//! staged, followed by the release's manifest (see [`crate::state::record`]). It lives beside the releases because
//! whoever may stage may write there (see the README's ownership recipe).
//!
//! A release without a record (put in place by other means, or staged by an
//! older version) is dated by the birth time of its directory, which the
//! kernel sets when the directory is created and nothing can change later;
//! on a file system without birth times it has no date and sorts after all
//! dated releases, by id.

use crate::error::{Error, Result};
use crate::fs::dir::{Access, Dir};
use crate::state::record::Meta;
use crate::state::record::{Header, Manifest};
use rustix::fs::{AtFlags, FileType, StatxFlags, Timespec, Timestamps};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The directory of records, inside `releases/` (a dot name: never a release).
pub const DIR: &str = ".staged";

/// Record that `id` was staged `at`. Called once the release is published;
/// a failure is reported, not fatal: the release exists and is complete,
/// it is merely dated by its directory's birth time. What usually makes it
/// fail (a record directory the stager may not write) is refused before
/// anything is staged, by [`check_writable`].
pub fn record(
    releases: &Dir,
    id: &str,
    at: SystemTime,
    manifest: Option<&Manifest>,
    meta: &Meta,
    dedup: Option<&crate::state::record::DedupRecord>,
) {
    if let Err(e) = try_record(releases, id, at, manifest, meta, dedup) {
        crate::log::warn(&format!(
            "cannot record when {id} was staged (it is dated by its directory instead): {}",
            e.one_line()
        ));
    }
}

/// The mode of `.staged`: that of `releases/` when it is group-writable
/// (every stager of the group writes records), with setgid and sticky so
/// records keep the group and no member removes or replaces another's;
/// else 0755.
fn dir_mode(releases: &rustix::fs::Stat) -> (u32, Option<u32>) {
    if releases.st_mode & 0o020 != 0 {
        ((releases.st_mode & 0o777) | 0o3000, Some(releases.st_gid))
    } else {
        (0o755, None)
    }
}

/// Open `.staged` for writing, creating it with [`dir_mode`]. One that is
/// ours but too narrow for `releases/` (made 0755 by an older version, or
/// by root's first `deploy`) is widened: otherwise members' records would
/// be lost.
fn open_for_writing(releases: &Dir) -> Result<Dir> {
    let (mode, group) = dir_mode(&releases.stat_self()?);
    let dir = releases.open_or_create_dir(DIR, 0o700)?;
    let st = dir.stat_self()?;
    // Ours: written by us, or by the owner whose rights we write with
    // below their `releases/` (see crate::fs::creds), and changed with them.
    if st.st_uid == dir.writer()
        && (st.st_mode & 0o7777 != mode || group.is_some_and(|g| g != st.st_gid))
    {
        let fail =
            |e| crate::fs::dir::io_error(e, format!("chmod of {}", releases.shown(DIR).display()));
        dir.as_owner(|| {
            if let Some(gid) = group {
                rustix::fs::fchown(&dir, None, Some(rustix::fs::Gid::from_raw(gid)))
                    .map_err(fail)?;
            }
            rustix::fs::fchmod(&dir, rustix::fs::Mode::from_raw_mode(mode)).map_err(fail)
        })?;
    }
    Ok(dir)
}

/// Refuse to stage (exit 1, naming the directory) when `.staged` is a
/// directory the stager may not write, so the record could not be written: a release without its record is dated wrong, shows no
/// size or meta, and is refused by `verify`, which is worse than no
/// release when the app verifies. Checked before anything is written, so
/// a refused stage leaves nothing behind.
pub fn check_writable(releases: &Dir) -> Result<()> {
    // Missing: created with the right mode when recording. Not a
    // directory (planted by the owner of `releases/`): recording fails
    // with a warning, as any other planted record trouble does.
    let Ok(Some(dir)) = releases.open_dir(DIR) else {
        return Ok(());
    };
    let st = dir.stat_self()?;
    if st.st_uid == dir.writer() {
        return Ok(()); // ours: widened if need be when recording
    }
    rustix::fs::accessat(&dir, ".", rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK, AtFlags::EACCESS)
        .map_err(|e| {
            crate::fs::dir::io_error(
                e,
                format!(
                    "cannot write staging records in {} (its owner, uid {}, must make it writable by the stagers, as releasectl does when it next writes there)",
                    releases.shown(DIR).display(),
                    st.st_uid
                ),
            )
        })
}

fn try_record(
    releases: &Dir,
    id: &str,
    at: SystemTime,
    manifest: Option<&Manifest>,
    meta: &Meta,
    dedup: Option<&crate::state::record::DedupRecord>,
) -> Result<()> {
    let dir = open_for_writing(releases)?;
    let tmp = format!(".{id}.{}", std::process::id());
    let mut file = dir
        .open_file(&tmp, Access::CreateNew)?
        .expect("CreateNew creates");
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let header = Header {
        release: id.to_string(),
        staged: humantime::format_rfc3339_nanos(at).to_string(),
        uid: rustix::process::geteuid().as_raw(),
        manifest: manifest.is_some(),
        size: manifest.map(Manifest::size),
        meta: meta.clone(),
        dedup: dedup.cloned(),
    };
    let text = crate::state::record::render(&header, manifest);
    let stamp = Timespec {
        tv_sec: since.as_secs() as i64,
        tv_nsec: since.subsec_nanos() as _,
    };
    let written = file
        .write_all(&text)
        .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
        .and_then(|()| {
            rustix::fs::futimens(
                &file,
                &Timestamps {
                    last_access: stamp,
                    last_modification: stamp,
                },
            )
        })
        .and_then(|()| rustix::fs::fsync(&file));
    if let Err(e) = written {
        let _ = dir.unlink(&tmp);
        return Err(crate::fs::dir::io_error(
            e,
            format!("writing {}", dir.shown(&tmp).display()),
        ));
    }
    dir.rename(&tmp, id)?;
    dir.sync()
}

/// The record of `id`, opened for reading, with its path for messages;
/// `None` if there is none. Opened without following a symlink or blocking
/// on a FIFO, then judged by what was opened: a regular file with one link,
/// owned by root, by the user running releasectl, by the owner of
/// `releases/`, or by the owner of the release it describes (`release`,
/// its open handle, else looked up by name). A record is as trustworthy as
/// its writer, and whoever owns a release can rewrite the release itself:
/// its record proves nothing against that owner, and no other member can
/// plant one that is believed.
pub fn open_record(
    releases: &Dir,
    id: &str,
    release: Option<&Dir>,
) -> Result<Option<(std::fs::File, PathBuf, u64)>> {
    let Some(dir) = releases.open_dir(DIR)? else {
        return Ok(None);
    };
    let shown = dir.shown(id);
    // Opened without a look first, and judged by the one fstat of what was
    // opened: `list` does this for every release.
    let Some((file, st)) = dir.open_read_stat(id)? else {
        return Ok(None);
    };
    let refuse = |why: String| {
        Error::operational(format_args!(
            "{} {why}; refusing to use it",
            shown.display()
        ))
    };
    if st.st_nlink != 1 {
        return Err(refuse(format!(
            "has {} links (a hard link to another file?)",
            st.st_nlink
        )));
    }
    let owner = st.st_uid;
    // The release's owner is looked up only for a record nobody else wrote.
    let release_owner = || -> Result<Option<u32>> {
        Ok(match release {
            Some(r) => Some(r.stat_self()?.st_uid),
            None => releases
                .stat(id)?
                .filter(|r| FileType::from_raw_mode(r.st_mode) == FileType::Directory)
                .map(|r| r.st_uid),
        })
    };
    let trusted = owner == 0
        || owner == rustix::process::geteuid().as_raw()
        || owner == releases.stat_self()?.st_uid
        || release_owner()? == Some(owner);
    if !trusted {
        return Err(refuse(format!(
            "is owned by uid {owner}, who owns neither release {id} nor {}",
            releases.shown("").display()
        )));
    }
    Ok(Some((file, shown, st.st_size as u64)))
}

/// The recorded staging times, by release id. A missing or unreadable
/// record directory (a planted symlink, say) means no records: the order
/// falls back to birth times, it does not fail `list`.
pub fn times(releases: &Dir) -> HashMap<String, SystemTime> {
    let mut times = HashMap::new();
    let dir = match releases.open_dir(DIR) {
        Ok(Some(dir)) => dir,
        Ok(None) => return times,
        Err(e) => {
            crate::log::warn(&format!("ignoring staging records: {}", e.one_line()));
            return times;
        }
    };
    let Ok(entries) = dir.entries() else {
        return times;
    };
    for entry in entries {
        let Some(id) = entry.name.to_str() else {
            continue;
        };
        if crate::release_id::validate(id).is_err() {
            continue;
        }
        if let Ok(Some(st)) = dir.stat(id) {
            if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
                times.insert(id.to_string(), clamp(st.st_mtime, st.st_mtime_nsec as i64));
            }
        }
    }
    times
}

/// When the directory `name` was created, if the file system records it.
pub fn birth_time(dir: &Dir, name: &str) -> Option<SystemTime> {
    let stx = rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BTIME).ok()?;
    if !StatxFlags::from_bits_retain(stx.stx_mask).contains(StatxFlags::BTIME) {
        return None;
    }
    Some(clamp(stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec as i64))
}

/// Drop the record of `id` (pruned) and records of releases that are gone.
pub fn forget(releases: &Dir, id: &str) {
    if let Ok(Some(dir)) = releases.open_dir(DIR) {
        if let Err(e) = dir.unlink(id) {
            crate::log::warn(&e.one_line());
        }
    }
}

/// Records whose release no longer exists, and temp files of killed runs.
/// A `.staged` that is not a directory is left alone (and reported by
/// `list`): pruning releases does not depend on it.
pub fn forget_orphans(releases: &Dir) -> Result<()> {
    let Ok(Some(dir)) = releases.open_dir(DIR) else {
        return Ok(());
    };
    for entry in dir.entries()? {
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        let orphan = if let Some(rest) = name.strip_prefix('.') {
            // `.ID.PID`: a temp file; its writer may still run.
            rest.rsplit_once('.')
                .and_then(|(_, pid)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        } else {
            releases.stat(name)?.is_none()
        };
        if orphan {
            dir.unlink(name)?;
        }
    }
    Ok(())
}

/// A time from disk, clamped to 1970..9999: a planted far-future stamp
/// must not make the date formatting panic.
fn clamp(secs: i64, nanos: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::new(
            secs.clamp(0, 253_402_300_799) as u64,
            (nanos.clamp(0, 999_999_999)) as u32,
        )
}
