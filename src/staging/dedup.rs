//! Dedup of unchanged files: a file of the new release whose bytes equal
//! the file at the same path in the current release shares that file's
//! data instead of getting its own copy.
//!
//! The current release's manifest names the candidates (a file at the same
//! path, of the same size); identity is then proved by comparing the bytes,
//! never guessed from sizes or times: the new file's bytes are read once
//! (hashed for the manifest as always) and compared with the old file's as
//! they come. Only when every byte matched is the new file cloned from the
//! old one (`FICLONE`: the two inodes share extents, and a write into either
//! gives the writer its own blocks) or, in `hardlink` mode, linked to it.
//! At the first differing byte the new file is written as usual: the part
//! already compared is copied from the old file (it is the same bytes), the
//! rest from the source. Nothing is written for an unchanged file, so a
//! release differing in few files costs the reads and a flush of metadata.
//!
//! The old release belongs to a deploy user who may race us (see the
//! README's security model). It is reached through directory handles, one
//! name at a time without following symlinks, and a file is compared and
//! then cloned or linked through the one descriptor that was opened and
//! checked, so renaming or exchanging names meanwhile changes nothing. That
//! descriptor's file must also be one nobody else can write: owned by the
//! user staging, not writable by group or others (as every file `stage`
//! writes is). Otherwise its bytes could change between the comparison and
//! the clone; such a file is simply copied.

use crate::config::stage::DedupMode;
use crate::error::{usage, Error, Result};
use crate::fs::bytes::PageBuf;
use crate::fs::dir::{Dir, DIR_FLAGS};
use crate::state::record;
use crate::state::record::{DedupRecord, Item, Manifest};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Reflink,
    Hardlink,
}

/// The current release, opened to share from.
struct Old {
    dir: Dir,
    manifest: Manifest,
    /// The last directory a file was looked up in: files of one directory
    /// come one after another, from a source directory and from tar alike.
    cached: Option<(Vec<Vec<u8>>, OwnedFd)>,
}

/// Dedup while staging one release; [`Dedup::off`] copies everything.
pub struct Dedup {
    how: Option<How>,
    old: Option<Old>,
    me: u32,
    record: DedupRecord,
    /// The source's bytes and the old file's, reused from file to file
    /// (page-aligned halves: see [`crate::fs::bytes::PageBuf`]).
    bufs: Option<PageBuf>,
}

/// A file to write: the name `name` in `dir`, the release path `parts`,
/// its staged mode, and its size if the source says so.
pub struct NewFile<'a> {
    pub dir: BorrowedFd<'a>,
    pub name: &'a CStr,
    pub parts: &'a [&'a [u8]],
    pub mode: u32,
    pub size: Option<u64>,
}

/// A file as written: its size and SHA-256, and the new inode when one was
/// created (not for a hard link, whose inode belongs to the old release
/// too: its times are not ours to set).
pub struct Written {
    pub size: u64,
    pub sha256: String,
    pub file: Option<File>,
}

/// Why writing one file failed: creating it (the caller's own error), or
/// reading or writing bytes.
pub enum Failure {
    Create(Error),
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

impl From<Errno> for Failure {
    fn from(e: Errno) -> Failure {
        Failure::Io(e.into())
    }
}

const CHUNK: usize = 256 * 1024;

impl Dedup {
    pub fn off() -> Dedup {
        Dedup {
            how: None,
            old: None,
            me: rustix::process::geteuid().as_raw(),
            record: DedupRecord::default(),
            bufs: None,
        }
    }

    /// Prepare to share from the current release of `root` into the temp
    /// tree `tmp`. No current release, or one without a manifest, means
    /// nothing to share. `auto` probes `FICLONE` in the temp tree and copies
    /// where it fails; `reflink` refuses there (exit 2).
    pub fn open(
        root: &crate::fs::root::RootDir,
        releases: &Dir,
        tmp: BorrowedFd<'_>,
        mode: DedupMode,
    ) -> Result<Dedup> {
        let mut d = Dedup::off();
        let want = match mode {
            DedupMode::Off => return Ok(d),
            DedupMode::Hardlink => How::Hardlink,
            DedupMode::Auto | DedupMode::Reflink => How::Reflink,
        };
        if want == How::Reflink {
            if let Err(e) = probe_reflink(tmp) {
                if mode == DedupMode::Reflink {
                    return Err(usage(format!(
                        "dedup = \"reflink\": the file system of {} cannot clone files \
                         (FICLONE: {}); use \"auto\" (copies there) or \"hardlink\"",
                        releases.shown("").display(),
                        io::Error::from(e)
                    )));
                }
                crate::log::debug(&format!(
                    "no reflinks on this file system ({}): copying",
                    io::Error::from(e)
                ));
                return Ok(d);
            }
        }
        if want == How::Hardlink && !hardlinks_protected() {
            // Without it the deploy user can plant, in the old release, a
            // hard link to any file of root's with the same bytes, which
            // would then be linked into the new release.
            crate::log::warn(
                "dedup = \"hardlink\" needs fs.protected_hardlinks = 1 (the kernel's \
                 default): copying",
            );
            return Ok(d);
        }
        // No current release, or a `current` activation would refuse:
        // nothing to share, and staging itself does not depend on it.
        let Ok(Some(id)) = root.current() else {
            return Ok(d);
        };
        // Exchanged for a symlink meanwhile: nothing to share, not a failure.
        let Ok(Some(dir)) = releases.open_dir(&id) else {
            return Ok(d);
        };
        let manifest = match record::read(releases, &id) {
            Ok(Some(m)) => m,
            Ok(None) => {
                crate::log::info(&format!(
                    "release {id} has no manifest: nothing is shared with it"
                ));
                return Ok(d);
            }
            Err(e) => {
                crate::log::warn(&format!(
                    "nothing is shared with release {id}: {}",
                    e.one_line()
                ));
                return Ok(d);
            }
        };
        d.how = Some(want);
        d.record.mode = match want {
            How::Reflink => "reflink",
            How::Hardlink => "hardlink",
        }
        .into();
        d.record.from = id;
        d.old = Some(Old {
            dir,
            manifest,
            cached: None,
        });
        Ok(d)
    }

    /// What was shared, for the staging record; `None` when dedup did not
    /// run (off, no current release, no reflinks).
    pub fn record(&self) -> Option<DedupRecord> {
        self.how.map(|_| self.record.clone())
    }

    /// Write `new` from `input`, sharing the current release's data when
    /// the bytes are the same. `create` makes the new, empty file (the
    /// caller's rules for names already taken apply).
    pub fn write_file(
        &mut self,
        new: NewFile<'_>,
        input: &mut dyn Read,
        create: &dyn Fn() -> std::result::Result<OwnedFd, Error>,
    ) -> std::result::Result<Written, Failure> {
        let NewFile {
            dir,
            name,
            parts,
            mode,
            size,
        } = new;
        let Some((old, len)) = self.candidate(parts, mode, size) else {
            let mut out = File::from(create().map_err(Failure::Create)?);
            let (size, sha256) = crate::fs::bytes::copy_hashing(input, &mut out)?;
            self.count(size, false);
            return Ok(Written {
                size,
                sha256,
                file: Some(out),
            });
        };
        // The progress line counts this file as copy_hashing counts the others.
        let written = self.share(old, len, dir, name, input, create);
        if written.is_ok() {
            crate::progress::file();
        }
        written
    }

    /// Write the new file from `input`: a clone of (or link to) `old`, of
    /// `len` bytes, when every byte matches, else a copy.
    fn share(
        &mut self,
        old: File,
        len: u64,
        dir: BorrowedFd<'_>,
        name: &CStr,
        input: &mut dyn Read,
        create: &dyn Fn() -> std::result::Result<OwnedFd, Error>,
    ) -> std::result::Result<Written, Failure> {
        let mut hasher = Sha256::new();
        let mut bufs = self.bufs.take().unwrap_or_else(|| PageBuf::new(2 * CHUNK));
        let (buf, theirs) = bufs.get().split_at_mut(CHUNK);
        let mut off = 0u64;
        // Compare while the bytes agree.
        let (differ, n) = loop {
            let n = read_some(input, buf)?;
            if n == 0 {
                break (off != len, 0);
            }
            hasher.update(&buf[..n]);
            crate::progress::bytes(n as u64);
            let got = read_full_at(&old, &mut theirs[..n], off)?;
            if got != n || buf[..n] != theirs[..n] {
                break (true, n);
            }
            off += n as u64;
        };
        if differ {
            // The bytes before `off` are the same in both: they come from
            // the old file, then the chunk in hand and the rest of the source.
            let mut out = File::from(create().map_err(Failure::Create)?);
            copy_range(&old, &mut out, off)?;
            out.write_all(&buf[..n])?;
            let mut size = off + n as u64;
            loop {
                let n = read_some(input, buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                crate::progress::bytes(n as u64);
                out.write_all(&buf[..n])?;
                size += n as u64;
            }
            self.count(size, false);
            self.bufs = Some(bufs);
            return Ok(Written {
                size,
                sha256: crate::fs::bytes::hex(&hasher.finalize()),
                file: Some(out),
            });
        }
        self.bufs = Some(bufs);
        let sha256 = crate::fs::bytes::hex(&hasher.finalize());
        let how = self.how.expect("a candidate means dedup runs");
        let file = match how {
            How::Reflink => {
                let out = create().map_err(Failure::Create)?;
                match rfs::ioctl_ficlone(&out, &old) {
                    Ok(()) => {}
                    // The probe passed, yet this clone failed: copy the
                    // bytes (they were just proved the same).
                    Err(_) => return self.copied(&old, File::from(out), len, sha256),
                }
                Some(File::from(out))
            }
            How::Hardlink => {
                if let Err(e) = link_fd(&old, dir, name, create) {
                    // Another file system (a bind mount) or no /proc: copy.
                    crate::log::debug(&format!("hard link refused ({e}): copying"));
                    let out = File::from(create().map_err(Failure::Create)?);
                    return self.copied(&old, out, len, sha256);
                }
                None
            }
        };
        self.count(len, true);
        Ok(Written {
            size: len,
            sha256,
            file,
        })
    }

    /// The fallback when sharing was refused after the bytes were proved
    /// the same: copy them from the old file into `out`.
    fn copied(
        &mut self,
        old: &File,
        mut out: File,
        len: u64,
        sha256: String,
    ) -> std::result::Result<Written, Failure> {
        copy_range(old, &mut out, len)?;
        self.count(len, false);
        Ok(Written {
            size: len,
            sha256,
            file: Some(out),
        })
    }

    fn count(&mut self, size: u64, shared: bool) {
        self.record.total_files += 1;
        self.record.total_bytes += size;
        if shared {
            self.record.files += 1;
            self.record.bytes += size;
        }
    }

    /// The old release's file at `parts`, opened and checked, and its size, if it may be
    /// the same as the new one: the manifest has a file there of the same
    /// size (and, for a hard link, mode: modes live in the inode), and it
    /// is a regular file only the user staging can write.
    fn candidate(&mut self, parts: &[&[u8]], mode: u32, size: Option<u64>) -> Option<(File, u64)> {
        let how = self.how?;
        let old = self.old.as_mut()?;
        let Some(&Item::File {
            mode: was_mode,
            size: was_size,
            ..
        }) = old.manifest.items.get(&record::encode(parts))
        else {
            return None;
        };
        // Empty files share nothing; other sizes are only a first filter.
        if was_size == 0 || size.is_some_and(|s| s != was_size) {
            return None;
        }
        if how == How::Hardlink && was_mode != mode {
            return None;
        }
        let (name, parents) = parts.split_last()?;
        let parent = old.parent(parents)?;
        let name = CString::new(*name).ok()?;
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rfs::openat(parent, name.as_c_str(), flags, Mode::empty()).ok()?;
        let st = rfs::fstat(&fd).ok()?;
        let ok = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_uid == self.me
            && st.st_mode & 0o022 == 0
            && st.st_size as u64 == was_size
            && (how == How::Reflink || st.st_mode & 0o7777 == mode);
        ok.then(|| (File::from(fd), was_size))
    }
}

impl Old {
    /// The old release's directory `parents`, each component opened from
    /// its parent's handle without following symlinks.
    fn parent(&mut self, parents: &[&[u8]]) -> Option<BorrowedFd<'_>> {
        let hit = self
            .cached
            .as_ref()
            .is_some_and(|(p, _)| p.iter().map(Vec::as_slice).eq(parents.iter().copied()));
        if !hit {
            let mut cur = rfs::openat(&self.dir, c".", DIR_FLAGS, Mode::empty()).ok()?;
            for part in parents {
                let part = CString::new(*part).ok()?;
                cur = rfs::openat(&cur, part.as_c_str(), DIR_FLAGS, Mode::empty()).ok()?;
            }
            self.cached = Some((parents.iter().map(|p| p.to_vec()).collect(), cur));
        }
        self.cached.as_ref().map(|(_, fd)| fd.as_fd())
    }
}

fn read_some(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Read up to `buf.len()` bytes at `off`; fewer only at the end of the file.
fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Copy the first `len` bytes of `from` to `out`.
fn copy_range(from: &File, out: &mut File, len: u64) -> io::Result<()> {
    let mut page_buf = PageBuf::new(CHUNK);
    let buf = page_buf.get();
    let mut off = 0u64;
    while off < len {
        let want = (len - off).min(CHUNK as u64) as usize;
        let n = read_full_at(from, &mut buf[..want], off)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shared from changed size",
            ));
        }
        out.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// Link the inode open as `old` at `name` in `dir`, never by its name in
/// the old release (which the deploy user may have changed since it was
/// opened). `AT_EMPTY_PATH` needs CAP_DAC_READ_SEARCH; without it the
/// descriptor's /proc link does the same.
fn link_fd(
    old: &File,
    dir: BorrowedFd<'_>,
    name: &CStr,
    create: &dyn Fn() -> std::result::Result<OwnedFd, Error>,
) -> std::result::Result<(), Errno> {
    let link = || match rfs::linkat(old, c"", dir, name, AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT) | Err(Errno::PERM) => {
            use std::os::fd::AsRawFd;
            let proc = format!("/proc/self/fd/{}", old.as_raw_fd());
            rfs::linkat(rfs::CWD, proc.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)
        }
        other => other,
    };
    match link() {
        // A name an earlier archive entry took: the caller's rules remove
        // it (through `create`), then the link takes its place.
        Err(Errno::EXIST) => {
            create().map_err(|_| Errno::EXIST)?;
            rfs::unlinkat(dir, name, AtFlags::empty())?;
            link()
        }
        other => other,
    }
}

/// Whether the file system of `tmp` can clone files: two empty files in
/// the temp tree, one cloned into the other.
fn probe_reflink(tmp: BorrowedFd<'_>) -> std::result::Result<(), Errno> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let (a, b) = (c".dedup-probe-a", c".dedup-probe-b");
    let made = rfs::openat(tmp, a, flags, Mode::from_raw_mode(0o600)).and_then(|fa| {
        let fb = rfs::openat(tmp, b, flags, Mode::from_raw_mode(0o600));
        let _ = rfs::unlinkat(tmp, b, AtFlags::empty());
        rfs::ioctl_ficlone(&fb?, &fa)
    });
    let _ = rfs::unlinkat(tmp, a, AtFlags::empty());
    made
}

/// Whether the kernel refuses hard links to files the linker neither owns
/// nor may write (`fs.protected_hardlinks`).
fn hardlinks_protected() -> bool {
    std::fs::read_to_string("/proc/sys/fs/protected_hardlinks").is_ok_and(|v| v.trim() == "1")
}
