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
use crate::fs::dir::{io_error, Dir};
use crate::staging::copy::{copy_files, dir_mode};
use crate::staging::dedup::Dedup;
use crate::staging::input;
use crate::staging::input::Inputs;
use crate::staging::tar_bounds::HeaderCap;
use crate::staging::unpack::{list, unpack};
use crate::state::record;
use crate::state::record::{Item, Manifest};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::io::{self};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
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

/// What staging `source` would do (`stage --dry-run`, `deploy --dry-run`);
/// the words are those of their JSON reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// A new release would be staged.
    WouldStage,
    /// The id is staged already with exactly this content: nothing to write.
    Unchanged,
}

/// What `stage --dry-run` found: a [`Plan`]. Like a
/// re-stage of an existing id it writes nothing: the source is read and
/// hashed as staging would, and compared with a fresh read of the release.
pub fn plan(
    app: &App,
    source: &Path,
    id: Option<&str>,
    shared: &[SharedPath],
    inputs: &Inputs,
) -> Result<Plan> {
    let (src, exists) = preflight(app, source, id, shared, inputs)?;
    let (Some(id), true) = (id, exists) else {
        return Ok(Plan::WouldStage);
    };
    let releases = existing_releases(app, id)?;
    compare(&releases, src, source, id, shared, inputs).map(|()| Plan::Unchanged)
}

/// `releases/`, which held `id` a moment ago.
fn existing_releases(app: &App, id: &str) -> Result<Dir> {
    app.root.releases_dir(false)?.ok_or_else(|| removed(id))
}

fn removed(id: &str) -> Error {
    Error::operational(format_args!(
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
        return Err(Error::operational(format_args!(
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
