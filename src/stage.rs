//! `stage`: turn a directory or a tar archive into a new release.
//!
//! The tree is built under a hidden temp name inside `releases/`, fsynced,
//! then renamed to its id with RENAME_NOREPLACE: an id never names a
//! half-written tree, and two stagings can never merge into one release.

use crate::app::App;
use crate::error::{usage, Error, Result};
use anyhow::Context;
use rustix::fs::{renameat_with, RenameFlags};
use rustix::io::Errno;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Dir,
    Tar,
    TarGz,
    TarZst,
}

/// Stage `source` as a release of `app`; returns the new release id.
pub fn stage(app: &App, source: &Path, id: Option<&str>) -> Result<String> {
    let kind = preflight(app, source, id)?;
    let releases = app.root.releases_dir(true)?.expect("created");
    let tmp = TempTree::create(&app.root.path().join(crate::swap::RELEASES))?;

    match kind {
        Kind::Dir => copy_tree(source, &tmp.path)?,
        Kind::Tar => unpack(open(source)?, &tmp.path)?,
        Kind::TarGz => unpack(flate2::read::GzDecoder::new(open(source)?), &tmp.path)?,
        Kind::TarZst => {
            let dec = ruzstd::streaming_decoder::StreamingDecoder::new(open(source)?)
                .map_err(|e| usage(format!("{}: not a zstd stream: {e}", source.display())))?;
            unpack(dec, &tmp.path)?
        }
    }
    sync_tree(&tmp.path)?;

    let tmp_name = tmp.name();
    let final_id = match id {
        Some(id) => {
            place(&releases, &tmp_name, id).map_err(|e| match e {
                Errno::EXIST | Errno::NOTEMPTY => usage(format!("release {id} already exists")),
                e => anyhow::Error::from(e)
                    .context("renaming staged tree")
                    .into(),
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
                match place(&releases, &tmp_name, &candidate) {
                    Ok(()) => break candidate,
                    // Another stage took this id in the same second: try the next suffix.
                    Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => n += 1,
                    Err(e) => {
                        return Err(anyhow::Error::from(e)
                            .context("renaming staged tree")
                            .into())
                    }
                }
            }
        }
    };
    tmp.disarm();
    rustix::fs::fsync(&releases).context("fsync releases/")?;
    crate::log::info(&format!("{}: staged release {final_id}", app.label()));
    Ok(final_id)
}

/// What `stage` would refuse before creating anything; `deploy --dry-run`
/// runs only this, since staging itself changes the disk.
pub fn check(app: &App, source: &Path, id: Option<&str>) -> Result<()> {
    preflight(app, source, id).map(|_| ())
}

/// Everything that can be refused is refused before anything is created.
fn preflight(app: &App, source: &Path, id: Option<&str>) -> Result<Kind> {
    if let Some(id) = id {
        crate::release_id::validate(id)?;
        if fs::symlink_metadata(app.release_path(id)).is_ok() {
            return Err(usage(format!("release {id} already exists")));
        }
    }
    let kind = kind_of(source)?;
    if kind == Kind::Dir {
        let (src, root) = (source.canonicalize(), app.root.path().canonicalize());
        if let (Ok(src), Ok(root)) = (src, root) {
            if root.starts_with(&src) {
                return Err(usage(format!(
                    "source {} contains the app root {}; stage from a build directory outside it",
                    source.display(),
                    root.display()
                )));
            }
        }
    }
    Ok(kind)
}

fn place(releases: &std::os::fd::OwnedFd, tmp: &str, id: &str) -> Result<(), Errno> {
    renameat_with(releases, tmp, releases, id, RenameFlags::NOREPLACE)
}

fn kind_of(source: &Path) -> Result<Kind> {
    let meta =
        fs::metadata(source).map_err(|e| usage(format!("source {}: {e}", source.display())))?;
    if meta.is_dir() {
        return Ok(Kind::Dir);
    }
    let name = source.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !meta.is_file() {
        return Err(usage(format!(
            "source {} is neither a directory nor a file",
            source.display()
        )));
    }
    if name.ends_with(".tar") {
        Ok(Kind::Tar)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Ok(Kind::TarGz)
    } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
        Ok(Kind::TarZst)
    } else {
        Err(usage(format!(
            "source {}: unsupported format (a directory, .tar, .tar.gz or .tar.zst)",
            source.display()
        )))
    }
}

fn open(source: &Path) -> Result<BufReader<File>> {
    let f = File::open(source).map_err(|e| usage(format!("source {}: {e}", source.display())))?;
    Ok(BufReader::new(f))
}

/// A temp tree under `releases/`, removed on drop unless disarmed.
struct TempTree {
    path: PathBuf,
    armed: bool,
}

impl TempTree {
    fn create(releases: &Path) -> Result<TempTree> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // The pid in the name lets `prune` tell a live staging from a leftover.
        let path = releases.join(format!(".stage-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempTree { path, armed: true })
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Copy a directory tree; symlinks are copied as symlinks, never followed.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let entries = fs::read_dir(src).map_err(|e| usage(format!("source {}: {e}", src.display())))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", src.display()))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let meta =
            fs::symlink_metadata(&from).with_context(|| format!("stat {}", from.display()))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target =
                fs::read_link(&from).with_context(|| format!("readlink {}", from.display()))?;
            std::os::unix::fs::symlink(&target, &to)
                .with_context(|| format!("symlink {}", to.display()))?;
        } else if ft.is_dir() {
            fs::create_dir(&to).with_context(|| format!("mkdir {}", to.display()))?;
            copy_tree(&from, &to)?;
            fs::set_permissions(&to, meta.permissions())
                .with_context(|| format!("chmod {}", to.display()))?;
        } else if ft.is_file() {
            fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        } else {
            return Err(usage(format!(
                "source {}: special files (devices, fifos, sockets) are not staged",
                from.display()
            )));
        }
    }
    Ok(())
}

/// Unpack a tar stream. The archive is refused as a whole (and the temp tree
/// removed by the caller's guard) if any entry would land outside the release.
fn unpack(reader: impl Read, dst: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let refuse = |what: String| -> Error { usage(format!("archive refused: {what}")) };
    let entries = archive
        .entries()
        .map_err(|e| refuse(format!("unreadable: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| refuse(format!("unreadable entry: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| refuse(format!("bad entry name: {e}")))?
            .into_owned();
        check_inside(&path).map_err(|why| refuse(format!("entry {}: {why}", path.display())))?;
        if entry.header().entry_type().is_hard_link() {
            if let Some(target) = entry.link_name().ok().flatten() {
                check_inside(&target)
                    .map_err(|why| refuse(format!("hard link {}: {why}", path.display())))?;
            }
        }
        // unpack_in also refuses to write through a symlink that leads out.
        match entry.unpack_in(dst) {
            Ok(true) => {}
            Ok(false) => {
                return Err(refuse(format!(
                    "entry {} would land outside",
                    path.display()
                )))
            }
            // A full disk is not a bad archive: exit 1 with the cause, so
            // automation retries instead of giving up on the input.
            Err(e) if is_resource_error(&e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("unpacking entry {}", path.display()))
                    .into())
            }
            Err(e) => return Err(refuse(format!("entry {}: {e}", path.display()))),
        }
    }
    Ok(())
}

/// Whether an unpack error comes from the machine (space, quota, I/O,
/// read-only file system) rather than from the archive.
fn is_resource_error(e: &std::io::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(code) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
        {
            if [
                Errno::NOSPC,
                Errno::DQUOT,
                Errno::IO,
                Errno::ROFS,
                Errno::NOMEM,
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

/// An entry path must be relative and must not climb with `..`.
fn check_inside(path: &Path) -> Result<(), &'static str> {
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(())
}

/// fsync every file and directory, deepest first, so the rename that
/// publishes the release never publishes data still in the page cache.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let ft = entry.file_type().context("file type")?;
        if ft.is_dir() {
            sync_tree(&entry.path())?;
        } else if ft.is_file() {
            File::open(entry.path())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("fsync {}", entry.path().display()))?;
        }
    }
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))?;
    Ok(())
}
