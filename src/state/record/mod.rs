//! What a release held when it was staged, and whether it still does.
//!
//! `stage` builds the manifest while it writes the tree (each file's
//! SHA-256 is computed from the bytes on their way to disk, not by a second
//! read) and stores it as the release's staging record,
//! `releases/.staged/<id>` (see [`crate::state::record::staged`]): one JSON line per path,
//! sorted, after a header line. `verify` (and activation with `verify =
//! true`) reads the release again through directory handles and reports
//! every path added, removed or changed.
//!
//! The record is as trustworthy as its writer: it is believed when owned by
//! root, us, the owner of `releases/` or the owner of the release (see
//! [`crate::state::record::staged::open_record`]). It proves the tree is what was staged,
//! against partial uploads, disk trouble and edits by others than the
//! release's owner, not against that owner. It is the stager's data, read
//! with caps: the header alone for `list`, `status` and activations, the
//! lines streamed for `verify`.

pub mod staged;

use crate::error::{Error, Result};
use crate::fs::dir::{io_error, Dir, DIR_FLAGS};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One path of a release, as staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Item {
    File {
        mode: u32,
        size: u64,
        sha256: String,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

impl Item {
    fn kind(&self) -> &'static str {
        match self {
            Item::File { .. } => "file",
            Item::Dir { .. } => "directory",
            Item::Symlink { .. } => "symlink",
        }
    }
}

/// Paths (encoded by [`encode`]) to what they were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub items: BTreeMap<String, Item>,
}

impl Manifest {
    /// Record `path` (components, relative to the release), replacing what
    /// an earlier archive entry of the same name recorded.
    pub fn put(&mut self, path: &[&[u8]], item: Item) {
        self.items.insert(encode(path), item);
    }

    /// Forget `path` and everything below it (a shared path: the release
    /// holds a link there, and nothing under it).
    pub fn remove(&mut self, path: &[&[u8]]) {
        let key = encode(path);
        let below = format!("{key}/");
        self.items
            .retain(|k, _| k != &key && !k.starts_with(&below));
    }

    /// The sum of the sizes of the files (a file with several names
    /// counts once per name).
    pub fn size(&self) -> u64 {
        self.items
            .values()
            .map(|i| match i {
                Item::File { size, .. } => *size,
                _ => 0,
            })
            .fold(0, u64::saturating_add)
    }

    /// The item recorded for `path`, if any (a hard link copies it).
    pub fn get(&self, path: &[&[u8]]) -> Option<&Item> {
        self.items.get(&encode(path))
    }
}

/// A path as stored: components joined by `/`; bytes that are not
/// printable UTF-8, and `%` itself, as `%XX`. One string per path, so that
/// names which are not UTF-8 are compared exactly too.
pub fn encode(path: &[&[u8]]) -> String {
    let mut out = String::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        for chunk in part.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '%' || c.is_control() {
                    let mut buf = [0; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out += &format!("%{b:02X}");
                    }
                } else {
                    out.push(c);
                }
            }
            for b in chunk.invalid() {
                out += &format!("%{b:02X}");
            }
        }
    }
    out
}

/// Copy `input` to `out`, returning the size and the SHA-256 of what was
/// written: the hash is of the bytes on their way to disk.
pub fn copy_hashing(
    input: &mut (impl Read + ?Sized),
    out: &mut impl Write,
) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut page_buf = PageBuf::new(256 * 1024);
    let buf = page_buf.get();
    let mut size = 0u64;
    loop {
        let n = match input.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
        crate::staging::progress::bytes(n as u64);
    }
    crate::staging::progress::file();
    Ok((size, hex(&hasher.finalize())))
}

/// A zeroed buffer that starts on a page boundary, for copies to and from
/// the page cache. The kernel's copy (`rep movsb`) into a buffer 8 or 16
/// bytes past a 32-byte boundary ran ~6x slower on the bench's VM than into
/// an aligned one, and that is where malloc puts a large buffer (a fresh
/// page, past its 16-byte chunk header).
pub(crate) struct PageBuf {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

const PAGE: usize = 4096;

impl PageBuf {
    pub(crate) fn new(len: usize) -> PageBuf {
        let bytes = vec![0u8; len + PAGE];
        // Never more than PAGE - 1: a Vec<u8>'s pointer can always be aligned.
        let start = bytes.as_ptr().align_offset(PAGE).min(PAGE);
        PageBuf { bytes, start, len }
    }

    pub(crate) fn get(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header line of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub release: String,
    pub staged: String,
    pub uid: u32,
    /// Absent in records written before manifests existed.
    #[serde(default)]
    pub manifest: bool,
    /// The sum of the file sizes in the manifest (absent in records
    /// written before it was kept here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `stage --meta` pairs (see [`crate::staging::input::parse_meta`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// What stage shared with the release current then (absent when
    /// nothing was: dedup off, no current release, no reflinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<crate::staging::dedup::Record>,
}

/// One line of a record after the header.
#[derive(Serialize, Deserialize)]
struct Line {
    path: String,
    #[serde(flatten)]
    item: Item,
}

/// The record's text: the header, then one line per path.
pub fn render(header: &Header, m: Option<&Manifest>) -> Vec<u8> {
    let mut out = serde_json::to_vec(header).expect("header serializes");
    out.push(b'\n');
    for (path, item) in m.into_iter().flat_map(|m| m.items.iter()) {
        let line = Line {
            path: path.clone(),
            item: item.clone(),
        };
        serde_json::to_writer(&mut out, &line).expect("line serializes");
        out.push(b'\n');
    }
    out
}

/// Largest record `verify` reads: it is streamed, a line at a time, so
/// this bounds the time a planted record can cost, not the memory.
const MAX_RECORD: u64 = 256 << 20;

/// Largest record `dedup` reads whole into memory (about 200 000 paths);
/// over it, nothing is shared with that release.
pub const MAX_DEDUP_RECORD: u64 = 32 << 20;

/// Largest header line read back (64 meta pairs of 1 KiB, escaped).
const MAX_HEADER: u64 = 1 << 20;

/// Largest path line read back: a path of 4 KiB, every byte escaped, and
/// its hash, many times over.
const MAX_LINE: u64 = 64 << 10;

/// At most this many differences are kept by [`check`]; the rest are counted.
pub const MAX_DIFFERENCES: usize = 1000;

fn invalid(shown: &Path, why: impl std::fmt::Display) -> Error {
    Error::Operational(anyhow::anyhow!(
        "{} is not a valid staging record: {why}",
        shown.display()
    ))
}

/// The header line of `id`'s record; it must name `id`.
fn parse_header(line: &[u8], id: &str, shown: &Path) -> Result<Header> {
    let header: Header = serde_json::from_slice(line).map_err(|e| invalid(shown, e))?;
    if header.release != id {
        return Err(invalid(
            shown,
            format!("it names release {:?}", header.release),
        ));
    }
    Ok(header)
}

/// A record opened for reading, past its header: its path lines one at a
/// time, each at most [`MAX_LINE`] bytes, in strictly increasing order (as
/// [`render`] writes them), so no line is held longer than it is read.
struct Record {
    reader: io::BufReader<io::Take<File>>,
    shown: PathBuf,
    line: Vec<u8>,
    last: Option<String>,
}

impl Record {
    /// The record of `id` and its header; `None` if there is none. A
    /// record larger than `max` bytes is refused without being read.
    fn open(
        releases: &Dir,
        id: &str,
        release: Option<&Dir>,
        max: u64,
    ) -> Result<Option<(Header, Record)>> {
        let Some((file, shown, len)) =
            crate::state::record::staged::open_record(releases, id, release)?
        else {
            return Ok(None);
        };
        if len > max {
            return Err(invalid(
                &shown,
                format!("it is {len} bytes, over the limit of {max}"),
            ));
        }
        let mut rec = Record {
            reader: io::BufReader::new(file.take(max)),
            shown,
            line: Vec::new(),
            last: None,
        };
        if !rec.next_line(MAX_HEADER)? {
            return Err(invalid(&rec.shown, "it is empty"));
        }
        let header = parse_header(&rec.line, id, &rec.shown)?;
        Ok(Some((header, rec)))
    }

    /// Read the next line into `self.line`; false at the end.
    fn next_line(&mut self, max: u64) -> Result<bool> {
        self.line.clear();
        let n = (&mut self.reader)
            .take(max)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| invalid(&self.shown, e))?;
        if n as u64 == max && self.line.last() != Some(&b'\n') {
            return Err(invalid(
                &self.shown,
                format!("a line is longer than {max} bytes"),
            ));
        }
        Ok(n > 0)
    }

    /// The next path and what it was staged as; `None` at the end.
    fn next_item(&mut self) -> Result<Option<(String, Item)>> {
        if !self.next_line(MAX_LINE)? {
            return Ok(None);
        }
        let l: Line = serde_json::from_slice(&self.line).map_err(|e| invalid(&self.shown, e))?;
        if self.last.as_ref().is_some_and(|last| *last >= l.path) {
            return Err(invalid(
                &self.shown,
                format!("path {:?} is out of order or listed twice", l.path),
            ));
        }
        self.last = Some(l.path.clone());
        Ok(Some((l.path, l.item)))
    }
}

/// The header of the record of `id`; `None` if there is none. Only the
/// header line is read (at most [`MAX_HEADER`] bytes), whatever the size
/// of the record: `list`, `status` and activations need no more. Read like
/// user input: what does not parse is an error, meta pairs that break the
/// rules are dropped. A record written before headers carried the size
/// leaves the size unknown.
pub fn read_header(releases: &Dir, id: &str) -> Result<Option<Header>> {
    let Some((mut header, _)) = Record::open(releases, id, None, u64::MAX)? else {
        return Ok(None);
    };
    header
        .meta
        .retain(|k, v| crate::staging::input::meta_problem(k, v).is_none());
    Ok(Some(header))
}

/// Read the record of `id` whole (for dedup, at most [`MAX_DEDUP_RECORD`]
/// bytes): `None` if there is none, or it holds no manifest. Read like
/// user input: a malformed record is an error naming it.
pub fn read(releases: &Dir, id: &str) -> Result<Option<Manifest>> {
    let Some((header, mut rec)) = Record::open(releases, id, None, MAX_DEDUP_RECORD)? else {
        return Ok(None);
    };
    if !header.manifest {
        return Ok(None);
    }
    let mut m = Manifest::default();
    while let Some((path, item)) = rec.next_item()? {
        m.items.insert(path, item);
    }
    Ok(Some(m))
}

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
        return Err(Error::Operational(anyhow::anyhow!(
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
                let (size, sha256) =
                    copy_hashing(&mut File::from(f), &mut io::sink()).map_err(|e| {
                        Error::Operational(
                            anyhow::Error::from(e).context(format!("reading {}", here.display())),
                        )
                    })?;
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
    let no_manifest = || {
        Error::VerifyFailed(format!(
            "release {id} has no manifest to verify against (it was not staged by \
             releasectl, or by a version without manifests)"
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_bufs_start_on_a_page_and_copy_hashing_is_unchanged() {
        for len in [1, 4096, 256 * 1024, 512 * 1024] {
            let mut b = PageBuf::new(len);
            let s = b.get();
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % 4096, 0);
            assert!(s.iter().all(|&x| x == 0));
        }
        let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        let (size, sha) = copy_hashing(&mut &data[..], &mut out).unwrap();
        assert_eq!((size, &out), (data.len() as u64, &data));
        assert_eq!(sha, hex(&Sha256::digest(&data)));
    }

    #[test]
    fn remove_drops_a_path_and_everything_below_it() {
        let mut m = Manifest::default();
        for p in [
            "storage",
            "storage/logs",
            "storage/logs/a",
            "storage2",
            "public",
        ] {
            let parts: Vec<&[u8]> = p.split('/').map(str::as_bytes).collect();
            m.put(&parts, Item::Dir { mode: 0o755 });
        }
        m.remove(&[b"storage"]);
        let left: Vec<&str> = m.items.keys().map(String::as_str).collect();
        assert_eq!(left, ["public", "storage2"]);
    }
}
