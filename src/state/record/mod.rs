//! The staging record: what a release held when it was staged, and
//! whether it still does. One module for the one file format: the format
//! itself here (header, path lines, meta pairs, the dedup summary), where
//! records live and how they are written and opened ([`staged`]), and the
//! release's tree held against one ([`verify`]). Part of the state layer.
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
pub mod verify;

use crate::error::{Error, Result};
use crate::fs::dir::Dir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, Read};
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

/// `--meta` pairs: at most this many per release.
pub const MAX_META: usize = 64;
const MAX_META_KEY: usize = 64;
const MAX_META_VALUE: usize = 1024;

/// `--meta KEY=VALUE` pairs, recorded with the release.
pub type Meta = BTreeMap<String, String>;

/// What is wrong with a pair, if anything (also applied to pairs read back
/// from a staging record).
pub fn meta_problem(k: &str, v: &str) -> Option<&'static str> {
    if k.is_empty()
        || k.len() > MAX_META_KEY
        || !k
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
    {
        Some("the key must be 1-64 of [a-z0-9_.-]")
    } else if v.len() > MAX_META_VALUE {
        Some("the value is longer than 1024 bytes")
    } else if v.chars().any(char::is_control) {
        Some("the value holds a control character")
    } else {
        None
    }
}

/// What dedup did while staging a release, kept in its staging record
/// (`releases/.staged/<id>`): the only honest account of reflinks, which
/// `stat` does not show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    /// `reflink` or `hardlink`.
    pub mode: String,
    /// The release whose files were shared.
    pub from: String,
    /// Files (and their bytes) that share the old release's data.
    pub files: u64,
    pub bytes: u64,
    /// Every file of the release (and bytes): files - shared = own.
    pub total_files: u64,
    pub total_bytes: u64,
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
    /// `stage --meta` pairs (held to [`meta_problem`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// What stage shared with the release current then (absent when
    /// nothing was: dedup off, no current release, no reflinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<crate::state::record::DedupRecord>,
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

fn invalid(shown: &Path, why: impl std::fmt::Display) -> Error {
    Error::operational(format_args!(
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
        .retain(|k, v| crate::state::record::meta_problem(k, v).is_none());
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

#[cfg(test)]
mod tests {
    use super::*;

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
