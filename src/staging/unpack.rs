//! A tar stream into a release: [`unpack`] writes it through handles,
//! refusing the archive as a whole on any entry that would land outside
//! the release, go through a symlink, or carry a device or FIFO; [`list`]
//! builds the manifest it would give without writing anything.

use crate::error::{usage, Error, Result};
use crate::fs::dir::{io_error, DIR_FLAGS};
use crate::staging::copy::{create_file, dir_mode, file_mode, MAX_DEPTH};
use crate::staging::dedup::{Dedup, Failure, NewFile};
use crate::staging::input;
use crate::state::record;
use crate::state::record::{Item, Manifest};
use rustix::fs::{self as rfs, AtFlags, Mode, Timespec, Timestamps};
use rustix::io::Errno;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// Notes whether the archive's reader reached the end of its input: a tar
/// stream that ends without its end-of-archive block was cut short.
struct EofWatch<R> {
    inner: R,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for EofWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit.set(true);
        }
        Ok(n)
    }
}

/// Unpack a tar stream into the empty directory `dst`. The archive is
/// refused as a whole (and the temp tree removed by the caller's guard) if
/// any entry would land outside the release or go through a symlink, is a
/// device, FIFO or unknown type, or if the archive is empty or cut short.
/// Entry names and hard link targets lose their first `strip` components
/// (see [`input::strip`]); entries with no more than that are skipped.
pub(super) fn unpack(
    reader: impl Read,
    dst: BorrowedFd<'_>,
    m: &mut Manifest,
    strip: usize,
    dedup: &mut Dedup,
) -> Result<()> {
    let mut stream = Walk::new(reader, strip);
    let mut count = 0usize;
    // Directories are created 0700 and get their modes at the end, deepest
    // first, so a read-only directory in the archive can still be filled.
    let mut dirs: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let mut entries = stream.entries()?;
    while let Some((mut entry, Taken { path, parts })) = next(&mut entries, strip, &mut count)? {
        let header = entry.header();
        let kind = header.entry_type();
        let key: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().unwrap_or(0);
        let Some((name, parents)) = parts.split_last() else {
            // The archive's own top directory ("./").
            if kind.is_dir() {
                continue;
            }
            return Err(refuse(format!("entry {} has no name", path.display())));
        };
        let parent = open_parents(dst, parents, &mut dirs)
            .map_err(|why| refuse(format!("entry {}: {why}", path.display())))?;
        let fail = |e: Errno| write_error(e, &path);
        if kind.is_dir() {
            make_dir(&parent, name, &path)?;
            dirs.insert(path.clone(), dir_mode(mode));
        } else if kind.is_file() || kind.is_contiguous() {
            let at = At {
                parent: &parent,
                name,
                key: &key,
                path: &path,
            };
            unpack_file(&at, &mut entry, mode, mtime, dedup, m)?;
        } else if kind.is_symlink() {
            let target = symlink_target(&entry, &path)?;
            replace_name(&parent, name, || {
                rfs::symlinkat(target.as_c_str(), &parent, name.as_c_str())
            })
            .map_err(fail)?;
            m.put(
                &key,
                Item::Symlink {
                    target: record::encode(&[target.as_bytes()]),
                },
            );
        } else if kind.is_hard_link() {
            let (target, tparts) = hard_link_target(&entry, &path, strip)?;
            if tparts == parts {
                // `tar cf x d d` stores a file's second mention as a link to itself.
                continue;
            }
            let at = At {
                parent: &parent,
                name,
                key: &key,
                path: &path,
            };
            unpack_hard_link(&at, dst, &target, &tparts, m)?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            return Err(refuse(format!(
                "entry {}: devices and fifos are not staged",
                path.display()
            )));
        } else {
            return Err(refuse(format!(
                "entry {}: unsupported entry type {:?}",
                path.display(),
                kind
            )));
        }
    }
    stream.finish(count)?;
    set_dir_modes(dst, &dirs, m)
}

/// Directories get their archive modes last, deepest first (they were
/// made 0700 so that a read-only one could still be filled).
fn set_dir_modes(
    dst: BorrowedFd<'_>,
    dirs: &BTreeMap<PathBuf, u32>,
    m: &mut Manifest,
) -> Result<()> {
    for (path, mode) in dirs.iter().rev() {
        let parts = components(path).expect("checked when inserted");
        let key: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        m.put(&key, Item::Dir { mode: *mode });
        let dir =
            walk(dst, &parts).map_err(|why| refuse(format!("entry {}: {why}", path.display())))?;
        rfs::fchmod(&dir, Mode::from_raw_mode(*mode)).map_err(|e| write_error(e, path))?;
    }
    Ok(())
}

/// A directory entry, made 0700 for now; listed twice, or implied by an
/// earlier entry, is fine if it is a directory.
fn make_dir(parent: &OwnedFd, name: &CString, path: &Path) -> Result<()> {
    match rfs::mkdirat(parent, name.as_c_str(), Mode::from_raw_mode(0o700)) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => rfs::openat(parent, name.as_c_str(), DIR_FLAGS, Mode::empty())
            .map(drop)
            .map_err(|_| refuse(format!("entry {} is listed twice", path.display()))),
        Err(e) => Err(write_error(e, path)),
    }
}

/// Where an entry goes: its parent directory (opened through handles), its
/// name there, its manifest key, and its name in the archive for messages.
struct At<'a> {
    parent: &'a OwnedFd,
    name: &'a CString,
    key: &'a [&'a [u8]],
    path: &'a Path,
}

/// A regular file entry: written (or shared by `dedup`) under its name, a
/// later copy replacing an earlier one as tar does, its mtime kept.
fn unpack_file<R: Read>(
    at: &At<'_>,
    entry: &mut tar::Entry<'_, R>,
    mode: u32,
    mtime: u64,
    dedup: &mut Dedup,
    m: &mut Manifest,
) -> Result<()> {
    let At {
        parent,
        name,
        key,
        path,
    } = *at;
    let fail = |e: Errno| write_error(e, path);
    let create = || {
        match create_file(parent.as_fd(), name, mode) {
            Err(Errno::EXIST) => {
                // A later copy of a file replaces the earlier one, as tar does.
                rfs::unlinkat(parent, name.as_c_str(), AtFlags::empty())
                    .map_err(|_| refuse(format!("entry {} is listed twice", path.display())))?;
                create_file(parent.as_fd(), name, mode)
            }
            other => other,
        }
        .map_err(fail)
    };
    let new = NewFile {
        dir: parent.as_fd(),
        name,
        parts: key,
        mode: file_mode(mode),
        size: Some(entry.size()),
    };
    let (size, sha256, out) = match dedup.write_file(new, entry, &create) {
        Ok(w) => (w.size, w.sha256, w.file),
        Err(Failure::Create(e)) => return Err(e),
        Err(Failure::Io(e)) => return Err(read_error(e, &format!("entry {}", path.display()))),
    };
    m.put(
        key,
        Item::File {
            mode: file_mode(mode),
            size,
            sha256,
        },
    );
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    // A hard link's inode is the old release's too: its times stay.
    if let Some(out) = out {
        let _ = rfs::futimens(
            &out,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        );
    }
    Ok(())
}

/// A hard link entry: a second name for something already unpacked
/// (`tparts`, within the release), recorded as what it links to.
fn unpack_hard_link(
    at: &At<'_>,
    dst: BorrowedFd<'_>,
    target: &Path,
    tparts: &[CString],
    m: &mut Manifest,
) -> Result<()> {
    let At {
        parent,
        name,
        key,
        path,
    } = *at;
    let Some((tname, tparents)) = tparts.split_last() else {
        return Err(refuse(format!(
            "hard link {} has no target",
            path.display()
        )));
    };
    let tdir = walk(dst, tparents)
        .map_err(|why| refuse(format!("hard link {}: {why}", path.display())))?;
    // linkat without AT_SYMLINK_FOLLOW links the name itself, so a hard
    // link can only point at something already in the release.
    replace_name(parent, name, || {
        rfs::linkat(
            &tdir,
            tname.as_c_str(),
            parent,
            name.as_c_str(),
            AtFlags::empty(),
        )
    })
    .map_err(|e| match e {
        Errno::NOENT => refuse(format!(
            "hard link {}: target {} is not in the archive before it",
            path.display(),
            target.display()
        )),
        e => write_error(e, path),
    })?;
    let tkey: Vec<&[u8]> = tparts.iter().map(|p| p.as_bytes()).collect();
    if let Some(item) = m.get(&tkey).cloned() {
        m.put(key, item);
    }
    Ok(())
}

/// What [`unpack`] would record for a tar stream, found without writing:
/// the same entries taken and refused (names, types, `strip`, a stream cut
/// short), each file hashed as it is read. Later entries replace earlier
/// ones as they do on disk; an entry under a non-directory, a directory
/// replaced by anything else, or a hard link to a directory or to nothing
/// earlier in the archive is refused, as unpacking refuses it.
pub(super) fn list(reader: impl Read, m: &mut Manifest, strip: usize) -> Result<()> {
    let mut stream = Walk::new(reader, strip);
    let mut count = 0usize;
    let mut dirs: BTreeMap<String, u32> = BTreeMap::new();
    let mut entries = stream.entries()?;
    while let Some((mut entry, Taken { path, parts })) = next(&mut entries, strip, &mut count)? {
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        let key: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        if key.is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(refuse(format!("entry {} has no name", path.display())));
        }
        let bad = |why: &str| refuse(format!("entry {}: {why}", path.display()));
        // The directories on the way: implied ones are made 0755.
        for n in 1..key.len() {
            let k = record::encode(&key[..n]);
            if m.items.contains_key(&k) {
                return Err(bad("goes through a name that is not a directory"));
            }
            dirs.entry(k).or_insert(0o755);
        }
        let k = record::encode(&key);
        let is_dir = dirs.contains_key(&k);
        if kind.is_dir() {
            if m.items.contains_key(&k) {
                return Err(bad("is listed twice"));
            }
            dirs.insert(k, dir_mode(mode));
            continue;
        }
        if is_dir {
            return Err(bad("is listed twice"));
        }
        let item = if kind.is_file() || kind.is_contiguous() {
            let (size, sha256) = crate::fs::bytes::copy_hashing(&mut entry, &mut io::sink())
                .map_err(|e| read_error(e, &format!("entry {}", path.display())))?;
            Item::File {
                mode: file_mode(mode),
                size,
                sha256,
            }
        } else if kind.is_symlink() {
            let target = symlink_target(&entry, &path)?;
            Item::Symlink {
                target: record::encode(&[target.as_bytes()]),
            }
        } else if kind.is_hard_link() {
            let (target, tparts) = hard_link_target(&entry, &path, strip)?;
            if tparts == parts {
                continue;
            }
            let tkey: Vec<&[u8]> = tparts.iter().map(|p| p.as_bytes()).collect();
            // linkat links a symlink itself too; a directory is never in
            // `m` while listing (see `dirs`).
            match m.get(&tkey) {
                Some(item) => item.clone(),
                None => {
                    return Err(refuse(format!(
                        "hard link {}: target {} is not in the archive before it",
                        path.display(),
                        target.display()
                    )))
                }
            }
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            return Err(bad("devices and fifos are not staged"));
        } else {
            return Err(bad(&format!("unsupported entry type {kind:?}")));
        };
        m.items.insert(k, item);
    }
    stream.finish(count)?;
    for (k, mode) in dirs {
        m.items.insert(k, Item::Dir { mode });
    }
    Ok(())
}

/// Every archive refusal reads the same: exit 2, nothing staged.
fn refuse(what: String) -> Error {
    usage(format!("archive refused: {what}"))
}

/// The walk over a tar stream that [`unpack`] and [`list`] share, so the
/// two can never disagree on which entries an archive has: what both take,
/// skip and refuse, and how the stream must end.
struct Walk<R: Read> {
    archive: tar::Archive<EofWatch<R>>,
    hit_eof: Rc<Cell<bool>>,
    strip: usize,
}

/// An entry taken: its name after `strip`, and that name's components.
struct Taken {
    path: PathBuf,
    parts: Vec<CString>,
}

type Entries<'a, R> = tar::Entries<'a, EofWatch<R>>;

impl<R: Read> Walk<R> {
    fn new(reader: R, strip: usize) -> Walk<R> {
        let hit_eof = Rc::new(Cell::new(false));
        let archive = tar::Archive::new(EofWatch {
            inner: reader,
            hit: hit_eof.clone(),
        });
        Walk {
            archive,
            hit_eof,
            strip,
        }
    }

    fn entries(&mut self) -> Result<Entries<'_, R>> {
        self.archive
            .entries()
            .map_err(|e| refuse(format!("unreadable: {e}")))
    }

    /// After the last entry (`count` of them taken): refuse a stream cut
    /// short or with nothing taken, and read on to the end of the compressed stream so its
    /// checksum is verified (a gzip or zstd stream cut inside the padding).
    fn finish(self, count: usize) -> Result<()> {
        if self.hit_eof.get() {
            return Err(refuse(
                "the archive is cut short (no end-of-archive block)".into(),
            ));
        }
        if count == 0 {
            return Err(refuse(if self.strip > 0 {
                format!("nothing is left after --strip-components {}", self.strip)
            } else {
                "the archive is empty".into()
            }));
        }
        let mut rest = self.archive.into_inner();
        io::copy(&mut (&mut rest).take(16 << 20), &mut io::sink())
            .map_err(|e| read_error(e, "after the last entry"))?;
        Ok(())
    }
}

/// The next entry taken, with its name: entries `strip` consumes and pax
/// global headers are skipped; a bad name or a sparse file refuses the
/// archive. `count` counts the entries taken.
fn next<'a, R: Read>(
    entries: &mut Entries<'a, R>,
    strip: usize,
    count: &mut usize,
) -> Result<Option<(tar::Entry<'a, EofWatch<R>>, Taken)>> {
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(e, "unreadable entry"))?;
        let named = entry
            .path()
            .map_err(|e| refuse(format!("bad entry name: {e}")))?
            .into_owned();
        let Some(path) = input::strip(&named, strip) else {
            continue;
        };
        let parts =
            components(&path).map_err(|why| refuse(format!("entry {}: {why}", path.display())))?;
        if entry.header().entry_type().is_pax_global_extensions() {
            continue;
        }
        *count += 1;
        let sparse = entry.pax_extensions().ok().flatten().is_some_and(|mut x| {
            x.any(|e| e.is_ok_and(|e| e.key_bytes().starts_with(b"GNU.sparse.")))
        });
        if sparse {
            return Err(refuse(format!(
                "entry {}: sparse files are not supported",
                path.display()
            )));
        }
        return Ok(Some((entry, Taken { path, parts })));
    }
    Ok(None)
}

/// A symlink entry's target, as written (never resolved).
fn symlink_target<R: Read>(entry: &tar::Entry<'_, R>, path: &Path) -> Result<CString> {
    let target = entry
        .link_name()
        .ok()
        .flatten()
        .ok_or_else(|| refuse(format!("symlink {} has no target", path.display())))?;
    CString::new(target.as_os_str().as_bytes())
        .map_err(|_| refuse(format!("symlink {}: bad target", path.display())))
}

/// A hard link entry's target after `strip`, and its components: a name
/// in the archive, validated like every entry's name.
fn hard_link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    path: &Path,
    strip: usize,
) -> Result<(PathBuf, Vec<CString>)> {
    let named = entry
        .link_name()
        .ok()
        .flatten()
        .ok_or_else(|| refuse(format!("hard link {} has no target", path.display())))?
        .into_owned();
    let target = input::strip(&named, strip).ok_or_else(|| {
        refuse(format!(
            "hard link {}: its target {} is stripped away by --strip-components {strip}",
            path.display(),
            named.display()
        ))
    })?;
    let parts = components(&target)
        .map_err(|why| refuse(format!("hard link {}: {why}", path.display())))?;
    Ok((target, parts))
}

/// Run `create`; if the name is taken by a non-directory, remove it and
/// try once more (a later archive entry replaces an earlier one).
fn replace_name(
    dir: &OwnedFd,
    name: &CString,
    create: impl Fn() -> rustix::io::Result<()>,
) -> rustix::io::Result<()> {
    match create() {
        Err(Errno::EXIST) => {
            rfs::unlinkat(dir, name.as_c_str(), AtFlags::empty())?;
            create()
        }
        other => other,
    }
}

/// The directory holding an entry: each component opened from its parent's
/// handle without following symlinks, created (0700) when missing.
fn open_parents(
    dst: BorrowedFd<'_>,
    parts: &[CString],
    dirs: &mut BTreeMap<PathBuf, u32>,
) -> std::result::Result<OwnedFd, String> {
    let mut cur = rfs::openat(dst, c".", DIR_FLAGS, Mode::empty()).map_err(|e| e.to_string())?;
    let mut path = PathBuf::new();
    for part in parts {
        path.push(OsStr::from_bytes(part.as_bytes()));
        match rfs::mkdirat(&cur, part.as_c_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                dirs.entry(path.clone()).or_insert(0o755);
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(format!("creating {}: {e}", path.display())),
        }
        cur = open_below(&cur, part, &path)?;
    }
    Ok(cur)
}

/// Walk existing directories below `dst`, never following a symlink.
fn walk(dst: BorrowedFd<'_>, parts: &[CString]) -> std::result::Result<OwnedFd, String> {
    let mut cur = rfs::openat(dst, c".", DIR_FLAGS, Mode::empty()).map_err(|e| e.to_string())?;
    let mut path = PathBuf::new();
    for part in parts {
        path.push(OsStr::from_bytes(part.as_bytes()));
        cur = open_below(&cur, part, &path)?;
    }
    Ok(cur)
}

fn open_below(cur: &OwnedFd, part: &CString, path: &Path) -> std::result::Result<OwnedFd, String> {
    rfs::openat(cur, part.as_c_str(), DIR_FLAGS, Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => {
            format!("goes through {}, which is not a directory", path.display())
        }
        e => format!("opening {}: {e}", path.display()),
    })
}

/// An entry path's components: relative, no `..`, no NUL.
fn components(path: &Path) -> std::result::Result<Vec<CString>, &'static str> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => {
                out.push(CString::new(p.as_bytes()).map_err(|_| "contains a NUL byte")?)
            }
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err("is nested too deep");
    }
    Ok(out)
}

/// A write that failed while unpacking: the machine's fault (exit 1) for
/// space, quota, I/O and permission errors; otherwise the archive asked for
/// something the file system cannot do (a name too long, a hard link to a
/// directory): exit 2.
fn write_error(e: Errno, path: &Path) -> Error {
    let io = io::Error::from(e);
    if is_resource_error(&io) {
        return io_error(e, format!("unpacking entry {}", path.display()));
    }
    usage(format!("archive refused: entry {}: {io}", path.display()))
}

/// A read of the archive that failed: a full disk or an I/O error is the
/// machine's (exit 1, so automation retries); anything else is the
/// archive's (exit 2).
fn read_error(e: io::Error, what: &str) -> Error {
    if let Some(r) = crate::staging::tar_bounds::refused(&e) {
        return usage(format!("archive refused: {r}"));
    }
    if is_resource_error(&e) {
        return Error::op_ctx(e, format_args!("unpacking {what}"));
    }
    usage(format!("archive refused: {what}: {e}"))
}

/// Whether an I/O error comes from the machine (space, quota, I/O,
/// read-only file system, permissions) rather than from the archive.
fn is_resource_error(e: &io::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(code) = c
            .downcast_ref::<io::Error>()
            .and_then(|io| io.raw_os_error())
        {
            if [
                Errno::NOSPC,
                Errno::DQUOT,
                Errno::IO,
                Errno::ROFS,
                Errno::NOMEM,
                Errno::ACCESS,
                Errno::PERM,
            ]
            .iter()
            .any(|e| e.raw_os_error() == code)
            {
                return true;
            }
        }
        cause = c.source();
    }
    false
}
