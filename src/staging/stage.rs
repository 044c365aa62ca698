//! `stage`: turn a directory or a tar archive into a new release.
//!
//! The tree is built under a hidden temp name inside `releases/`, flushed,
//! then renamed to its id with RENAME_NOREPLACE: an id never names a
//! half-written tree, and two stagings can never merge into one release.
//!
//! Everything is written through directory handles (see [`crate::fs::dir`]):
//! the temp directory is created mode 0700 and filled through its handle,
//! so exchanging it, or `releases/`, for a symlink meanwhile redirects
//! nothing. A source directory is read the same way: each entry is opened
//! without following symlinks and judged by what was opened.
//!
//! A release carries no privilege: setuid, setgid and sticky bits of files
//! are dropped (so are setuid and setgid on directories), files belong to
//! the user running `stage` (never to ids recorded in an archive), and
//! devices, FIFOs and sockets are refused.

use crate::config::app::App;
use crate::config::shared::SharedPath;
use crate::error::{usage, Error, Result};
use crate::fs::dir::{io_error, Dir, DIR_FLAGS};
use crate::staging::copy::{copy_files, create_file, dir_mode, file_mode, MAX_DEPTH};
use crate::staging::dedup::{Dedup, Failure, NewFile};
use crate::staging::input;
use crate::staging::input::Inputs;
use crate::staging::tar_bounds::HeaderCap;
use crate::state::record;
use crate::state::record::{Item, Manifest};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

/// What a source turned out to be, opened once (an archive with what it
/// is to be checked against, see [`crate::staging::input`]).
enum Source {
    Dir(OwnedFd),
    // Boxed: the checks carry the signature's paths, far larger than an fd.
    Archive(input::Archive, Box<input::Checks>),
}

/// What `stage` did: a new release, or nothing, because the id was
/// already staged with exactly this content (so a re-run of a deploy is a
/// no-op, not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub id: String,
    pub unchanged: bool,
}

/// Stage `source` (`-`: an archive on stdin) as a release of `app`, its
/// `shared` paths linked into `ROOT/shared/` (see [`crate::staging::shared`]).
pub fn stage(
    app: &App,
    source: &Path,
    id: Option<&str>,
    shared: &[SharedPath],
    inputs: &Inputs,
) -> Result<Staged> {
    let (src, exists) = preflight(app, source, id, shared, inputs)?;
    if let (Some(id), true) = (id, exists) {
        // An id staged already is only compared: nothing under ROOT is
        // written, whatever the outcome (a resumed rollout writes nothing).
        let releases = existing_releases(app, id)?;
        crate::progress::begin();
        let staged = restage(app, &releases, src, source, id, shared, inputs);
        crate::progress::end();
        return staged;
    }
    let fresh = app.root.releases_dir(false)?.is_none();
    if let Some(releases) = app.root.releases_dir(false)? {
        crate::state::record::staged::check_writable(&releases)?;
    }
    let releases = app.root.releases_dir(true)?.expect("created");
    crate::progress::begin();
    let staged = build(app, &releases, src, source, id, shared, inputs);
    crate::progress::end();
    if staged.is_err() && fresh {
        // A refused first stage leaves the root as it found it (removed
        // only while empty: never another stage's tree).
        app.root.dir().remove_empty_dir(crate::fs::root::RELEASES);
    }
    staged
}

/// What `stage --dry-run` found: `would_stage` or `unchanged`. Like a
/// re-stage of an existing id it writes nothing: the source is read and
/// hashed as staging would, and compared with a fresh read of the release.
pub fn plan(
    app: &App,
    source: &Path,
    id: Option<&str>,
    shared: &[SharedPath],
    inputs: &Inputs,
) -> Result<&'static str> {
    let (src, exists) = preflight(app, source, id, shared, inputs)?;
    let (Some(id), true) = (id, exists) else {
        return Ok("would_stage");
    };
    let releases = existing_releases(app, id)?;
    compare(&releases, src, source, id, shared, inputs).map(|()| "unchanged")
}

/// `releases/`, which held `id` a moment ago.
fn existing_releases(app: &App, id: &str) -> Result<Dir> {
    app.root.releases_dir(false)?.ok_or_else(|| removed(id))
}

fn removed(id: &str) -> Error {
    Error::Operational(anyhow::anyhow!(
        "release {id} was removed while it was compared; stage again"
    ))
}

/// Refuse (exit 2) unless staging `src` would give exactly the release
/// `id` as it is now, its shared paths linked. Nothing is written: the
/// source is read and hashed as staging reads it (see [`source_manifest`])
/// and compared with a fresh read of the release, not with its staging
/// record, so a release edited since it was staged is not "unchanged".
fn compare(
    releases: &Dir,
    src: Source,
    source: &Path,
    id: &str,
    shared: &[SharedPath],
    inputs: &Inputs,
) -> Result<()> {
    let mut m = source_manifest(src, source, inputs)?;
    expect_links(&mut m, shared);
    let now = read_existing(releases, id)?;
    same_content(id, &now, &m)
}

/// The manifest staging `src` would record, found without writing
/// anything: a directory is walked as [`copy_files`] walks it, an archive
/// read (and its signature checked) as [`write_tree`] reads it, each file
/// hashed on the way. The shared paths' links are not in it.
fn source_manifest(src: Source, source: &Path, inputs: &Inputs) -> Result<Manifest> {
    let mut m = Manifest::default();
    match src {
        Source::Dir(fd) => {
            let off = &mut Dedup::off();
            copy_files(fd.as_fd(), None, source, &mut Vec::new(), &mut m, off)?;
        }
        Source::Archive(archive, checks) => {
            let mut reader = input::Reader::start(archive, *checks)?;
            let shown = reader.shown().to_string();
            let listed = reader.decoded().and_then(|tar| {
                let capped = HeaderCap::new(tar, &shown);
                list(capped, &mut m, inputs.strip)
            });
            reader.finish(listed)?;
        }
    }
    Ok(m)
}

/// Put in `m` what [`crate::staging::shared::link`] would: each shared path a
/// symlink into `shared/`, the directories on its way created 0755 if the
/// source had none.
fn expect_links(m: &mut Manifest, shared: &[SharedPath]) {
    for p in shared {
        let key = p.key();
        for n in 1..key.len() {
            m.items
                .entry(record::encode(&key[..n]))
                .or_insert(Item::Dir { mode: 0o755 });
        }
        m.remove(&key);
        let target = record::encode(&[p.link_target().as_bytes()]);
        m.put(&key, Item::Symlink { target });
    }
}

/// Write the tree of `src` into a new temp tree under `releases`, shared
/// paths linked: the tree, its manifest and what dedup shared.
///
/// The tree is written with the rights of `releases/`'s owner (see
/// [`crate::fs::creds`]): in a deploy user's `releases/` it is theirs, and
/// nothing they race into it makes root write anywhere they could not.
fn write_tree<'r>(
    app: &App,
    releases: &'r Dir,
    src: Source,
    source: &Path,
    shared: &[SharedPath],
    inputs: &Inputs,
) -> Result<(TempTree<'r>, Manifest, Dedup)> {
    releases.as_owner(|| {
        let tmp = TempTree::create(releases)?;
        // Files identical to the current release's share its data.
        let mut dedup = Dedup::open(&app.root, releases, tmp.fd(), app.config.dedup)?;
        // What is written, path by path, with each file's hash taken on the way.
        let mut m = Manifest::default();

        let top_mode = match src {
            Source::Dir(fd) => {
                let mode = rfs::fstat(&fd)
                    .map_err(|e| io_error(e, format!("stat {}", source.display())))?
                    .st_mode;
                copy_files(
                    fd.as_fd(),
                    Some(tmp.fd()),
                    source,
                    &mut Vec::new(),
                    &mut m,
                    &mut dedup,
                )?;
                dir_mode(mode)
            }
            Source::Archive(archive, checks) => {
                // One pass over the archive: unpacked, hashed and fed to the
                // signature check as it is read; a mismatch discards the tree.
                let mut reader = input::Reader::start(archive, *checks)?;
                let shown = reader.shown().to_string();
                // Oversized headers are refused before the tar crate buffers them.
                let unpacked = reader.decoded().and_then(|tar| {
                    let capped = HeaderCap::new(tar, &shown);
                    unpack(capped, tmp.fd(), &mut m, inputs.strip, &mut dedup)
                });
                reader.finish(unpacked)?;
                0o755
            }
        };
        // Before the flush and the publishing rename: the release is published
        // with its links, and the manifest describes it so.
        crate::staging::shared::link(
            &app.root,
            &tmp.dir,
            shared,
            &app.config.shared_owner,
            &mut m,
        )?;
        rfs::fchmod(tmp.fd(), Mode::from_raw_mode(top_mode))
            .map_err(|e| io_error(e, "chmod of the staged tree".into()))?;
        Ok((tmp, m, dedup))
    })
}

/// Stage an id that exists already: unchanged if `source` gives exactly
/// the tree that is there now (see [`compare`]), refused otherwise.
/// Nothing is written either way.
fn restage(
    app: &App,
    releases: &Dir,
    src: Source,
    source: &Path,
    id: &str,
    shared: &[SharedPath],
    inputs: &Inputs,
) -> Result<Staged> {
    compare(releases, src, source, id, shared, inputs)?;
    crate::log::info(&format!(
        "{}: release {id} is already staged with this content",
        app.label()
    ));
    Ok(Staged {
        id: id.to_string(),
        unchanged: true,
    })
}

/// The release `id` as it is now, read through handles.
fn read_existing(releases: &Dir, id: &str) -> Result<Manifest> {
    match releases.open_dir(id)? {
        Some(dir) => crate::state::record::verify::scan(&dir),
        None => Err(removed(id)),
    }
}

/// Refuse (exit 2) unless the release `id`, read as `now`, is what the
/// source gave (`new`).
fn same_content(id: &str, now: &Manifest, new: &Manifest) -> Result<()> {
    let diffs = crate::state::record::verify::diff(now, new);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(usage(format!(
        "release {id} already exists with different content: {}; stage it under another id",
        crate::state::record::verify::summary(&diffs)
    )))
}

/// Write, link, flush and publish the release into `releases`.
fn build(
    app: &App,
    releases: &Dir,
    src: Source,
    source: &Path,
    id: Option<&str>,
    shared: &[SharedPath],
    inputs: &Inputs,
) -> Result<Staged> {
    let (tmp, m, dedup) = write_tree(app, releases, src, source, shared, inputs)?;
    // One flush for the whole tree, before the rename that publishes it:
    // a release id never names data still in the page cache.
    rfs::syncfs(tmp.fd()).map_err(|e| io_error(e, "flushing the staged tree".into()))?;

    let final_id = match id {
        Some(id) => {
            tmp.publish(releases, id).map_err(|e| match e {
                Errno::EXIST | Errno::NOTEMPTY => usage(format!("release {id} already exists")),
                e => io_error(e, "renaming the staged tree".into()),
            })?;
            id.to_string()
        }
        None => {
            let base = crate::clock::compact_utc(SystemTime::now());
            let mut n = 1;
            loop {
                let candidate = if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                };
                match tmp.publish(releases, &candidate) {
                    Ok(()) => break candidate,
                    // Another stage took this id in the same second: try the next suffix.
                    Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => n += 1,
                    Err(e) => return Err(io_error(e, "renaming the staged tree".into())),
                }
            }
        }
    };
    // The name was looked up again by rename: make sure it published the
    // tree we wrote, not one exchanged into the temp name meanwhile.
    let placed = releases.stat(&final_id)?;
    let ours = rfs::fstat(tmp.fd()).map_err(|e| io_error(e, "stat staged tree".into()))?;
    if placed.is_none_or(|p| (p.st_dev, p.st_ino) != (ours.st_dev, ours.st_ino)) {
        return Err(Error::Operational(anyhow::anyhow!(
            "the staged tree was replaced while staging; {} is not the release that was staged, remove it",
            releases.shown(&final_id).display()
        )));
    }
    tmp.disarm();
    releases.sync()?;
    crate::state::record::staged::record(
        releases,
        &final_id,
        SystemTime::now(),
        Some(&m),
        &inputs.meta,
        dedup.record().as_ref(),
    );
    crate::log::info(&format!("{}: staged release {final_id}", app.label()));
    Ok(Staged {
        id: final_id,
        unchanged: false,
    })
}

/// Everything that can be refused is refused before anything is created
/// (what the shared paths need of the release itself is judged once it is
/// written, before `shared/` is touched).
fn preflight(
    app: &App,
    source: &Path,
    id: Option<&str>,
    shared: &[SharedPath],
    inputs: &Inputs,
) -> Result<(Source, bool)> {
    crate::staging::shared::check(&app.root, shared, &app.config.shared_owner)?;
    let mut exists = false;
    if let Some(id) = id {
        crate::release_id::validate(id)?;
        if let Some(releases) = app.root.releases_dir(false)? {
            exists = releases.stat(id)?.is_some();
        }
    }
    let src = open_source(source, inputs)?;
    if let Source::Dir(fd) = &src {
        inputs.check_directory(source, &app.config.signing)?;
        // Compared by handle: the root is not looked up by path again.
        if crate::fs::dir::contains(fd.as_fd(), app.root.dir().as_fd()).unwrap_or(false) {
            return Err(usage(format!(
                "source {} contains the app root {}; stage from a build directory outside it",
                source.display(),
                app.root.path().display()
            )));
        }
    }
    Ok((src, exists))
}

/// Open the source once (the operator named it: a symlink at the top is
/// followed) and decide what it is from what was opened.
fn open_source(source: &Path, inputs: &Inputs) -> Result<Source> {
    if source.as_os_str() == input::STDIN {
        let archive = input::stdin()?;
        let checks = inputs.prepare(&archive)?;
        return Ok(Source::Archive(archive, Box::new(checks)));
    }
    let bad = |why: &dyn std::fmt::Display| usage(format!("source {}: {why}", source.display()));
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = rfs::open(source, flags, Mode::empty()).map_err(|e| match e {
        Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::NXIO => bad(&io::Error::from(e)),
        e => io_error(e, format!("opening source {}", source.display())),
    })?;
    let st = rfs::fstat(&fd).map_err(|e| io_error(e, format!("stat {}", source.display())))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => return Ok(Source::Dir(fd)),
        FileType::RegularFile => {}
        _ => return Err(bad(&"is neither a directory nor a file")),
    }
    let archive = input::file(File::from(fd), source)?;
    let checks = inputs.prepare(&archive)?;
    Ok(Source::Archive(archive, Box::new(checks)))
}

/// A temp tree under `releases/`, removed on drop unless disarmed.
struct TempTree<'a> {
    releases: &'a Dir,
    name: String,
    dir: Dir,
    armed: bool,
}

impl<'a> TempTree<'a> {
    fn create(releases: &'a Dir) -> Result<TempTree<'a>> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // The pid in the name lets `prune` tell a live staging from a leftover.
        let name = format!(".stage-{}-{nanos}", std::process::id());
        let dir = releases.create_private_dir(&name)?;
        Ok(TempTree {
            releases,
            name,
            dir,
            armed: true,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    fn publish(&self, releases: &Dir, id: &str) -> std::result::Result<(), Errno> {
        releases.rename_noreplace(&self.name, id)
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempTree<'_> {
    /// Removes the tree only while its name still holds the directory
    /// this process created (same inode): a name found again is never
    /// trusted to be ours. The removal itself is made with `releases/`'s
    /// owner's rights, so even a tree exchanged in between the check and
    /// the removal is deleted only as far as that owner could.
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let ours = self.dir.stat_self().ok();
        let there = self.releases.stat(&self.name).ok().flatten();
        match (ours, there) {
            (Some(o), Some(t)) if (o.st_dev, o.st_ino) == (t.st_dev, t.st_ino) => {
                let _ = self.releases.remove_tree(&self.name);
            }
            (_, None) => {}
            _ => crate::log::warn(&format!(
                "{} is no longer the tree this stage created; left as it is",
                self.releases.shown(&self.name).display()
            )),
        }
    }
}

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
fn unpack(
    reader: impl Read,
    dst: BorrowedFd<'_>,
    m: &mut Manifest,
    strip: usize,
    dedup: &mut Dedup,
) -> Result<()> {
    let hit_eof = Rc::new(Cell::new(false));
    let mut archive = tar::Archive::new(EofWatch {
        inner: reader,
        hit: hit_eof.clone(),
    });
    let refuse = |what: String| -> Error { usage(format!("archive refused: {what}")) };
    let entries = archive
        .entries()
        .map_err(|e| refuse(format!("unreadable: {e}")))?;
    // Directories are created 0700 and get their modes at the end, deepest
    // first, so a read-only directory in the archive can still be filled.
    let mut dirs: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let mut count = 0usize;
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
        let header = entry.header();
        let kind = header.entry_type();
        let key: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().unwrap_or(0);
        if kind.is_pax_global_extensions() {
            continue;
        }
        count += 1;
        let sparse = entry.pax_extensions().ok().flatten().is_some_and(|mut x| {
            x.any(|e| e.is_ok_and(|e| e.key_bytes().starts_with(b"GNU.sparse.")))
        });
        if sparse {
            return Err(refuse(format!(
                "entry {}: sparse files are not supported",
                path.display()
            )));
        }
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
            match rfs::mkdirat(&parent, name.as_c_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    // Listed twice, or implied by an earlier entry: fine if a directory.
                    rfs::openat(&parent, name.as_c_str(), DIR_FLAGS, Mode::empty())
                        .map_err(|_| refuse(format!("entry {} is listed twice", path.display())))?;
                }
                Err(e) => return Err(fail(e)),
            }
            dirs.insert(path.clone(), dir_mode(mode));
        } else if kind.is_file() || kind.is_contiguous() {
            let create = || {
                match create_file(parent.as_fd(), name, mode) {
                    Err(Errno::EXIST) => {
                        // A later copy of a file replaces the earlier one, as tar does.
                        rfs::unlinkat(&parent, name.as_c_str(), AtFlags::empty()).map_err(
                            |_| refuse(format!("entry {} is listed twice", path.display())),
                        )?;
                        create_file(parent.as_fd(), name, mode)
                    }
                    other => other,
                }
                .map_err(fail)
            };
            let size_hint = entry.size();
            let new = NewFile {
                dir: parent.as_fd(),
                name,
                parts: &key,
                mode: file_mode(mode),
                size: Some(size_hint),
            };
            let written = dedup.write_file(new, &mut entry, &create);
            let (size, sha256, out) = match written {
                Ok(w) => (w.size, w.sha256, w.file),
                Err(Failure::Create(e)) => return Err(e),
                Err(Failure::Io(e)) => {
                    return Err(read_error(e, &format!("entry {}", path.display())))
                }
            };
            m.put(
                &key,
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
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| refuse(format!("symlink {} has no target", path.display())))?;
            let target = CString::new(target.as_os_str().as_bytes())
                .map_err(|_| refuse(format!("symlink {}: bad target", path.display())))?;
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
            let tparts = components(&target)
                .map_err(|why| refuse(format!("hard link {}: {why}", path.display())))?;
            let Some((tname, tparents)) = tparts.split_last() else {
                return Err(refuse(format!(
                    "hard link {} has no target",
                    path.display()
                )));
            };
            if tparts == parts {
                // `tar cf x d d` stores a file's second mention as a link to itself.
                continue;
            }
            let tdir = walk(dst, tparents)
                .map_err(|why| refuse(format!("hard link {}: {why}", path.display())))?;
            // linkat without AT_SYMLINK_FOLLOW links the name itself, so a
            // hard link can only point at something already in the release.
            replace_name(&parent, name, || {
                rfs::linkat(
                    &tdir,
                    tname.as_c_str(),
                    &parent,
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
                e => fail(e),
            })?;
            let tkey: Vec<&[u8]> = tparts.iter().map(|p| p.as_bytes()).collect();
            if let Some(item) = m.get(&tkey).cloned() {
                m.put(&key, item);
            }
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
    if hit_eof.get() {
        return Err(refuse(
            "the archive is cut short (no end-of-archive block)".into(),
        ));
    }
    if count == 0 {
        return Err(refuse(if strip > 0 {
            format!("nothing is left after --strip-components {strip}")
        } else {
            "the archive is empty".into()
        }));
    }
    // Read on to the end of the compressed stream so its checksum is
    // verified (a gzip or zstd stream cut inside the padding).
    let mut rest = archive.into_inner();
    io::copy(&mut (&mut rest).take(16 << 20), &mut io::sink())
        .map_err(|e| read_error(e, "after the last entry"))?;
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

/// What [`unpack`] would record for a tar stream, found without writing:
/// the same entries taken and refused (names, types, `strip`, a stream cut
/// short), each file hashed as it is read. Later entries replace earlier
/// ones as they do on disk; an entry under a non-directory, a directory
/// replaced by anything else, or a hard link to a directory or to nothing
/// earlier in the archive is refused, as unpacking refuses it.
fn list(reader: impl Read, m: &mut Manifest, strip: usize) -> Result<()> {
    let hit_eof = Rc::new(Cell::new(false));
    let mut archive = tar::Archive::new(EofWatch {
        inner: reader,
        hit: hit_eof.clone(),
    });
    let refuse = |what: String| -> Error { usage(format!("archive refused: {what}")) };
    let entries = archive
        .entries()
        .map_err(|e| refuse(format!("unreadable: {e}")))?;
    let mut dirs: BTreeMap<String, u32> = BTreeMap::new();
    let mut count = 0usize;
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
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        if kind.is_pax_global_extensions() {
            continue;
        }
        count += 1;
        let sparse = entry.pax_extensions().ok().flatten().is_some_and(|mut x| {
            x.any(|e| e.is_ok_and(|e| e.key_bytes().starts_with(b"GNU.sparse.")))
        });
        if sparse {
            return Err(refuse(format!(
                "entry {}: sparse files are not supported",
                path.display()
            )));
        }
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
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| refuse(format!("symlink {} has no target", path.display())))?;
            let target = CString::new(target.as_os_str().as_bytes())
                .map_err(|_| refuse(format!("symlink {}: bad target", path.display())))?;
            Item::Symlink {
                target: record::encode(&[target.as_bytes()]),
            }
        } else if kind.is_hard_link() {
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
            let tparts = components(&target)
                .map_err(|why| refuse(format!("hard link {}: {why}", path.display())))?;
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
    if hit_eof.get() {
        return Err(refuse(
            "the archive is cut short (no end-of-archive block)".into(),
        ));
    }
    if count == 0 {
        return Err(refuse(if strip > 0 {
            format!("nothing is left after --strip-components {strip}")
        } else {
            "the archive is empty".into()
        }));
    }
    let mut rest = archive.into_inner();
    io::copy(&mut (&mut rest).take(16 << 20), &mut io::sink())
        .map_err(|e| read_error(e, "after the last entry"))?;
    for (k, mode) in dirs {
        m.items.insert(k, Item::Dir { mode });
    }
    Ok(())
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
        return Error::Operational(anyhow::Error::from(e).context(format!("unpacking {what}")));
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
