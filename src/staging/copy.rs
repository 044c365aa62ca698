//! Copying into a release: a source directory, file by file through
//! handles ([`copy_tree`], also how `shared/` is seeded), and the bytes of
//! one file with their SHA-256 taken on the way (see [`crate::fs::bytes`]).

use crate::error::{usage, Error, Result};
use crate::fs::bytes::copy_hashing;
use crate::fs::dir::{io_error, DIR_FLAGS};
use crate::staging::dedup::{Dedup, Failure, NewFile};
use crate::state::record;
use crate::state::record::{Item, Manifest};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{self};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The mode a staged directory gets: permission bits and sticky only.
pub(super) fn dir_mode(mode: u32) -> u32 {
    mode & 0o1777
}

/// The mode a staged file gets: permission bits only (no setuid, setgid
/// or sticky).
pub(super) fn file_mode(mode: u32) -> u32 {
    mode & 0o777
}

/// How deep a source tree or an archive may nest (one open handle a
/// level): well below what prune can remove.
pub(super) const MAX_DEPTH: usize = crate::fs::dir::MAX_DEPTH / 2;

/// Copy the directory `src` into the empty directory `dst`, both handles.
/// Symlinks are copied as symlinks, never followed.
pub(crate) fn copy_tree(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    shown: &Path,
    path: &mut Vec<Vec<u8>>,
    m: &mut Manifest,
) -> Result<()> {
    copy_files(src, Some(dst), shown, path, m, &mut Dedup::off())
}

/// [`copy_tree`], sharing unchanged files through `dedup`. Without `dst`
/// nothing is written: the manifest the copy would give is built alone.
pub(super) fn copy_files(
    src: BorrowedFd<'_>,
    dst: Option<BorrowedFd<'_>>,
    shown: &Path,
    path: &mut Vec<Vec<u8>>,
    m: &mut Manifest,
    dedup: &mut Dedup,
) -> Result<()> {
    if path.len() >= MAX_DEPTH {
        return Err(usage(format!(
            "source {}: nested deeper than {MAX_DEPTH} levels",
            shown.display()
        )));
    }
    // Listing a directory reopens it (`openat(fd, ".")`): as root too.
    for name in as_reader(|| crate::fs::dir::read_entries(src))
        .map(|entries| {
            entries
                .iter()
                .map(|e| crate::fs::dir::cstring(&e.name))
                .collect::<Vec<_>>()
        })
        .map_err(|e| io_error(e, format!("reading {}", shown.display())))?
    {
        let from = shown.join(OsStr::from_bytes(name.as_bytes()));
        path.push(name.as_bytes().to_vec());
        let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
        let st = as_reader(|| rfs::statat(src, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW))
            .map_err(|e| fail(e, "stat", &from))?;
        let entry = Entry {
            src,
            dst,
            name: name.as_c_str(),
            from: &from,
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => copy_symlink(&entry, &parts, m)?,
            FileType::Directory => {
                let sub = as_reader(|| rfs::openat(src, name.as_c_str(), DIR_FLAGS, Mode::empty()))
                    .map_err(|e| match e {
                        Errno::NOTDIR | Errno::LOOP => changed(&from),
                        e => fail(e, "opening", &from),
                    })?;
                let out = match dst {
                    Some(dst) => Some(
                        make_dir(dst, name.as_c_str()).map_err(|(e, what)| fail(e, what, &from))?,
                    ),
                    None => None,
                };
                let mode = dir_mode(
                    rfs::fstat(&sub)
                        .map_err(|e| fail(e, "stat", &from))?
                        .st_mode,
                );
                m.put(&parts, Item::Dir { mode });
                let into = out.as_ref().map(|o| o.as_fd());
                copy_files(sub.as_fd(), into, &from, path, m, dedup)?;
                if let Some(out) = out {
                    rfs::fchmod(&out, Mode::from_raw_mode(mode))
                        .map_err(|e| fail(e, "chmod of the copy of", &from))?;
                }
            }
            FileType::RegularFile => copy_file(&entry, &st, &parts, m, dedup)?,
            _ => {
                return Err(usage(format!(
                    "source {}: special files (devices, fifos, sockets) are not staged",
                    from.display()
                )))
            }
        }
        path.pop();
    }
    Ok(())
}

/// One name of the source directory being copied.
struct Entry<'a> {
    src: BorrowedFd<'a>,
    /// Where the copy goes; `None`: only the manifest is built.
    dst: Option<BorrowedFd<'a>>,
    name: &'a CStr,
    /// Its path, for messages.
    from: &'a Path,
}

/// The source changed under the copy (a name swapped for a symlink, a
/// FIFO or another file between two looks): refused, never followed.
fn changed(what: &Path) -> Error {
    Error::operational(format_args!(
        "source {} changed while it was copied; stage again",
        what.display()
    ))
}

fn fail(e: Errno, what: &str, from: &Path) -> Error {
    io_error(e, format!("{what} {}", from.display()))
}

/// A symlink is copied as a symlink, its target as written.
fn copy_symlink(e: &Entry<'_>, parts: &[&[u8]], m: &mut Manifest) -> Result<()> {
    let target = as_reader(|| rfs::readlinkat(e.src, e.name, Vec::new())).map_err(|err| {
        if err == Errno::INVAL {
            changed(e.from)
        } else {
            fail(err, "readlink", e.from)
        }
    })?;
    if let Some(dst) = e.dst {
        rfs::symlinkat(target.as_c_str(), dst, e.name)
            .map_err(|err| fail(err, "creating a symlink for", e.from))?;
    }
    m.put(
        parts,
        Item::Symlink {
            target: record::encode(&[target.as_bytes()]),
        },
    );
    Ok(())
}

/// A regular file, opened as the one `st` describes (or refused as
/// changed), copied (or shared by `dedup`) and hashed on the way.
fn copy_file(
    e: &Entry<'_>,
    st: &rfs::Stat,
    parts: &[&[u8]],
    m: &mut Manifest,
    dedup: &mut Dedup,
) -> Result<()> {
    // O_NOFOLLOW and O_NONBLOCK: a symlink or FIFO swapped in since the
    // stat is neither followed nor waited on, and the fstat below judges
    // what was really opened.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let input = as_reader(|| rfs::openat(e.src, e.name, flags | OFlags::CLOEXEC, Mode::empty()))
        .map_err(|err| match err {
            Errno::LOOP | Errno::NXIO => changed(e.from),
            err => fail(err, "opening", e.from),
        })?;
    let now = rfs::fstat(&input).map_err(|err| fail(err, "stat", e.from))?;
    if FileType::from_raw_mode(now.st_mode) != FileType::RegularFile
        || (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
    {
        return Err(changed(e.from));
    }
    let mut input = File::from(input);
    let written = match e.dst {
        Some(dst) => {
            let create = || {
                create_file(dst, e.name, now.st_mode)
                    .map_err(|err| fail(err, "creating the copy of", e.from))
            };
            let new = NewFile {
                dir: dst,
                name: e.name,
                parts,
                mode: file_mode(now.st_mode),
                size: Some(now.st_size as u64),
            };
            dedup
                .write_file(new, &mut input, &create)
                .map(|w| (w.size, w.sha256))
        }
        None => copy_hashing(&mut input, &mut io::sink()).map_err(Failure::Io),
    };
    let (size, sha256) = match written {
        Ok(w) => w,
        Err(Failure::Create(err)) => return Err(err),
        Err(Failure::Io(err)) => {
            return Err(Error::op_ctx(
                err,
                format_args!("copying {}", e.from.display()),
            ))
        }
    };
    m.put(
        parts,
        Item::File {
            mode: file_mode(now.st_mode),
            size,
            sha256,
        },
    );
    Ok(())
}

/// Create the directory `name` (0700 until it is filled) in `dst` and open it.
fn make_dir(
    dst: BorrowedFd<'_>,
    name: &std::ffi::CStr,
) -> std::result::Result<OwnedFd, (Errno, &'static str)> {
    rfs::mkdirat(dst, name, Mode::from_raw_mode(0o700))
        .map_err(|e| (e, "creating a directory for"))?;
    rfs::openat(dst, name, DIR_FLAGS, Mode::empty()).map_err(|e| (e, "opening the copy of"))
}

/// Read the source with root's own rights, also while the copy is
/// written with the owner's (see [`crate::fs::creds`]): the operator named a
/// source only root may be able to read.
fn as_reader<T>(f: impl FnOnce() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    crate::fs::creds::acting_io(None, f)
}

/// Create a new file (never an existing name) with the staged mode.
pub(super) fn create_file(
    dir: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    mode: u32,
) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::from_raw_mode(0o600))?;
    // fchmod, not the create mode: the umask must not decide a release's modes.
    rfs::fchmod(&fd, Mode::from_raw_mode(file_mode(mode)))?;
    Ok(fd)
}
