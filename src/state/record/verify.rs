//! A release's tree against its record: [`scan`] reads a release again
//! through handles, [`diff`] compares two manifests (`stage` shows what
//! changed since the current release with it), and [`check`] streams a
//! record against a fresh scan for `verify` and for activations with
//! `verify = true`.

use super::{encode, Item, Manifest, Record, MAX_RECORD};
use crate::error::{Error, Result};
use crate::fs::bytes::copy_hashing;
use crate::fs::dir::{io_error, Dir, DIR_FLAGS};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::Serialize;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

/// At most this many differences are kept by [`check`]; the rest are counted.
pub const MAX_DIFFERENCES: usize = 1000;

/// Read the release `dir` again, through handles, into a manifest.
pub fn scan(dir: &Dir) -> Result<Manifest> {
    let mut m = Manifest::default();
    let mut path: Vec<Vec<u8>> = Vec::new();
    scan_dir(dir.as_fd(), &mut path, &mut m, &dir.shown(""))?;
    Ok(m)
}

fn scan_dir(
    fd: BorrowedFd<'_>,
    path: &mut Vec<Vec<u8>>,
    m: &mut Manifest,
    shown: &std::path::Path,
) -> Result<()> {
    if path.len() >= crate::fs::dir::MAX_DEPTH {
        return Err(Error::operational(format_args!(
            "{}: nested deeper than {} levels",
            shown.display(),
            crate::fs::dir::MAX_DEPTH
        )));
    }
    let names: Vec<CString> = crate::fs::dir::read_entries(fd)
        .map_err(|e| io_error(e, format!("reading {}", shown.display())))?
        .iter()
        .map(|e| crate::fs::dir::cstring(&e.name))
        .collect();
    for name in names {
        path.push(name.as_bytes().to_vec());
        let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
        let here = shown.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let fail = |e: Errno, what: &str| io_error(e, format!("{what} {}", here.display()));
        let st = rfs::statat(fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail(e, "stat"))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                let target = rfs::readlinkat(fd, name.as_c_str(), Vec::new())
                    .map_err(|e| fail(e, "readlink"))?;
                m.put(
                    &parts,
                    Item::Symlink {
                        target: encode(&[target.as_bytes()]),
                    },
                );
            }
            FileType::Directory => {
                let sub = rfs::openat(fd, name.as_c_str(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| fail(e, "opening"))?;
                let mode = rfs::fstat(&sub).map_err(|e| fail(e, "stat"))?.st_mode & 0o7777;
                m.put(&parts, Item::Dir { mode });
                scan_dir(sub.as_fd(), path, m, &here)?;
            }
            FileType::RegularFile => {
                let flags = OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC;
                let f = rfs::openat(fd, name.as_c_str(), flags, Mode::empty())
                    .map_err(|e| fail(e, "opening"))?;
                let now = rfs::fstat(&f).map_err(|e| fail(e, "stat"))?;
                if FileType::from_raw_mode(now.st_mode) != FileType::RegularFile {
                    return Err(fail(Errno::NOENT, "changed while reading"));
                }
                let (size, sha256) = copy_hashing(&mut File::from(f), &mut io::sink())
                    .map_err(|e| Error::op_ctx(e, format_args!("reading {}", here.display())))?;
                m.put(
                    &parts,
                    Item::File {
                        mode: now.st_mode & 0o7777,
                        size,
                        sha256,
                    },
                );
            }
            other => {
                // A release never holds these; staged ones cannot.
                m.put(
                    &parts,
                    Item::Symlink {
                        target: format!("<{other:?}>"),
                    },
                );
            }
        }
        path.pop();
    }
    Ok(())
}

/// A path that differs between what was staged and what is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// What changed, for people: "content", "mode 0644 -> 0755", ...
    pub detail: String,
}

/// Every path added, removed or changed, in path order.
pub fn diff(staged: &Manifest, now: &Manifest) -> Vec<Difference> {
    let mut out = Vec::new();
    for (path, was) in &staged.items {
        match now.items.get(path) {
            None => out.push(Difference {
                path: path.clone(),
                change: "removed",
                detail: was.kind().into(),
            }),
            Some(is) if is != was => out.push(Difference {
                path: path.clone(),
                change: "changed",
                detail: describe_change(was, is),
            }),
            Some(_) => {}
        }
    }
    for (path, is) in &now.items {
        if !staged.items.contains_key(path) {
            out.push(Difference {
                path: path.clone(),
                change: "added",
                detail: is.kind().into(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn describe_change(was: &Item, is: &Item) -> String {
    match (was, is) {
        (
            Item::File {
                mode: m1,
                size: s1,
                sha256: h1,
            },
            Item::File {
                mode: m2,
                size: s2,
                sha256: h2,
            },
        ) => {
            let mut what = Vec::new();
            if h1 != h2 {
                what.push(if s1 == s2 {
                    "content".to_string()
                } else {
                    format!("content (size {s1} -> {s2})")
                });
            }
            if m1 != m2 {
                what.push(format!("mode {m1:04o} -> {m2:04o}"));
            }
            what.join(", ")
        }
        (Item::Dir { mode: m1 }, Item::Dir { mode: m2 }) => format!("mode {m1:04o} -> {m2:04o}"),
        (Item::Symlink { target: t1 }, Item::Symlink { target: t2 }) => {
            format!("target {t1} -> {t2}")
        }
        (a, b) => format!("{} replaced by a {}", a.kind(), b.kind()),
    }
}

/// What [`check`] found: the first [`MAX_DIFFERENCES`] differences, in
/// path order, and how many there are in all.
#[derive(Debug, Default)]
pub struct Checked {
    pub differences: Vec<Difference>,
    pub total: usize,
}

impl Checked {
    fn push(&mut self, d: Difference) {
        self.total += 1;
        if self.differences.len() < MAX_DIFFERENCES {
            self.differences.push(d);
        }
    }

    pub fn matches(&self) -> bool {
        self.total == 0
    }

    /// The differences on one line, at most a few named.
    pub fn summary(&self) -> String {
        summary_of(&self.differences, self.total)
    }
}

/// Compare the release `id`, opened as `release`, with its manifest. The
/// record is streamed against a fresh scan of the release (one line held
/// at a time, see [`Record`]): memory goes with the release's tree, not
/// with what its record claims. No manifest is an error of its own
/// (exit 14): there is nothing to trust it against.
pub fn check(releases: &Dir, id: &str, release: &Dir) -> Result<Checked> {
    let no_manifest = || Error::VerifyFailed {
        app: None,
        release: id.to_string(),
        differences: None,
        activation: false,
    };
    let Some((header, mut rec)) = Record::open(releases, id, Some(release), MAX_RECORD)? else {
        return Err(no_manifest());
    };
    if !header.manifest {
        return Err(no_manifest());
    }
    let mut now = scan(release)?;
    let mut out = Checked::default();
    while let Some((path, was)) = rec.next_item()? {
        match now.items.remove(&path) {
            None => out.push(Difference {
                path,
                change: "removed",
                detail: was.kind().into(),
            }),
            Some(is) if is != was => out.push(Difference {
                detail: describe_change(&was, &is),
                path,
                change: "changed",
            }),
            Some(_) => {}
        }
    }
    for (path, is) in now.items {
        out.push(Difference {
            path,
            change: "added",
            detail: is.kind().into(),
        });
    }
    out.differences.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The differences on one line, at most a few named.
pub fn summary(diffs: &[Difference]) -> String {
    summary_of(diffs, diffs.len())
}

fn summary_of(diffs: &[Difference], total: usize) -> String {
    let named: Vec<String> = diffs
        .iter()
        .take(3)
        .map(|d| format!("{} {} ({})", d.change, d.path, d.detail))
        .collect();
    let more = total.saturating_sub(named.len());
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{total} path(s) differ: {}{tail}", named.join(", "))
}
