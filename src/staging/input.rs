//! What `stage` is handed, and what it checks about it: an archive from a
//! file or from stdin (its format told by its first bytes), the SHA-256 the
//! operator expects of it (`--sha256`, or its line in a `SHA256SUMS` file),
//! its OpenSSH signature (see [`crate::staging::signature`]), the leading components
//! to strip from its entry names, and the `--meta` pairs recorded with the
//! release.
//!
//! The archive is read once. Every byte read from it passes through a
//! [`Reader`]'s tap on its way to the decompressor: the tap hashes it and
//! feeds it to `ssh-keygen -Y verify`. The verdicts come after the tree is
//! unpacked into its temp directory, before the tree is flushed and
//! published; a mismatch refuses the release and the temp tree goes with
//! it. Checking the bytes that were unpacked, rather than reading the file
//! once to check it and again to unpack it, also means the file cannot be
//! changed between the check and its use, and lets stdin be checked too.

use crate::config::stage::Policy;
use crate::error::{usage, Error, Result};
use crate::staging::signature;
use crate::staging::signature::Verifying;
use crate::state::record::{meta_problem, Meta, MAX_META};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufRead, Cursor, IsTerminal, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The source that means "the archive comes on stdin".
pub const STDIN: &str = "-";

/// Largest `SHA256SUMS` file read (sysupdate's list a few hundred lines).
const MAX_CHECKSUMS: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The command line's input flags, as given.
#[derive(Debug, Default)]
pub struct Flags<'a> {
    pub sha256: Option<&'a str>,
    pub checksums: Option<&'a Path>,
    pub signature: Option<&'a Path>,
    pub allowed_signers: Option<&'a Path>,
    pub signer_identity: Option<&'a str>,
    pub strip_components: usize,
    pub meta: &'a [String],
}

/// The input flags, validated (before anything is created).
#[derive(Debug, Default)]
pub struct Inputs {
    /// Lowercase hex.
    sha256: Option<String>,
    checksums: Option<PathBuf>,
    signature: Option<signature::Request>,
    pub strip: usize,
    pub meta: Meta,
}

impl Inputs {
    /// Validate the flags against the app's `[stage]` signing policy: a
    /// malformed hash or pair, a signature without allowed signers, or no
    /// signature where the config requires one is refused here.
    pub fn new(f: Flags<'_>, policy: &Policy) -> Result<Inputs> {
        let sha256 = f
            .sha256
            .map(|h| {
                if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(h.to_ascii_lowercase())
                } else {
                    Err(usage(format!(
                        "--sha256 {}: expected 64 hex digits",
                        h.escape_debug()
                    )))
                }
            })
            .transpose()?;
        let signature =
            signature::Request::new(f.signature, f.allowed_signers, f.signer_identity, policy)?;
        Ok(Inputs {
            sha256,
            checksums: f.checksums.map(Path::to_path_buf),
            signature,
            strip: f.strip_components,
            meta: parse_meta(f.meta)?,
        })
    }

    /// The flags that only make sense for an archive (refused for a directory).
    fn archive_flags(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.sha256.is_some() {
            v.push("--sha256");
        }
        if self.checksums.is_some() {
            v.push("--checksums");
        }
        if self.signature.is_some() {
            v.push("--signature");
        }
        if self.strip > 0 {
            v.push("--strip-components");
        }
        v
    }

    /// Refuse archive-only checks for a directory source. A config that
    /// requires signatures refuses directories too: nothing would be checked.
    pub fn check_directory(&self, source: &Path, policy: &Policy) -> Result<()> {
        if let Some(flag) = self.archive_flags().first() {
            return Err(usage(format!(
                "{flag} applies to archives; {} is a directory",
                source.display()
            )));
        }
        if policy.required {
            return Err(usage(format!(
                "{} is a directory, and the config requires a signed archive (require_signature)",
                source.display()
            )));
        }
        Ok(())
    }

    /// Everything the checks need that can be refused before anything is
    /// created: the checksum file's entry for the archive, the signature's
    /// files, ssh-keygen and the signer's identity.
    pub fn prepare(&self, archive: &Archive) -> Result<Checks> {
        let mut expected = Vec::new();
        if let Some(h) = &self.sha256 {
            expected.push(("--sha256".to_string(), h.clone()));
        }
        if let Some(file) = &self.checksums {
            let Some(name) = &archive.name else {
                return Err(usage(format!(
                    "--checksums looks the archive up by its file name, and stdin has none; \
                     use --sha256 with the hash from {}",
                    file.display()
                )));
            };
            let hex = lookup_checksum(file, name)?;
            expected.push((format!("{} ({name})", file.display()), hex));
        }
        let signature = self
            .signature
            .as_ref()
            .map(signature::Request::prepare)
            .transpose()?;
        Ok(Checks {
            expected,
            signature,
        })
    }
}

/// What an archive is checked against while it is read.
pub struct Checks {
    /// (what said so, lowercase hex)
    expected: Vec<(String, String)>,
    signature: Option<signature::Ready>,
}

/// An archive opened once, its format known.
pub struct Archive {
    /// Bytes already read from `input` to tell the format (stdin only: a
    /// file is peeked at with pread), read again before the rest.
    prefix: Vec<u8>,
    input: File,
    pub compression: Compression,
    /// The file name, for `--checksums` (none for stdin).
    name: Option<String>,
    /// For messages: the path, or "stdin".
    pub shown: String,
}

/// The archive on stdin. Its format is told from its first bytes, which
/// are kept to be read again.
pub fn stdin() -> Result<Archive> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return Err(usage(
            "source -: stdin is a terminal; pipe an archive in (curl … | releasectl stage -)",
        ));
    }
    let fd = stdin
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::op_ctx(e, "duplicating stdin"))?;
    let mut input = File::from(fd);
    let mut prefix = Vec::with_capacity(512);
    (&mut input)
        .take(512)
        .read_to_end(&mut prefix)
        .map_err(|e| read_failed(e, "reading stdin"))?;
    let compression = sniff(&prefix).ok_or_else(|| {
        usage(if prefix.is_empty() {
            "source -: stdin is empty".to_string()
        } else {
            "source -: stdin is not a tar, gzip or zstd archive".to_string()
        })
    })?;
    Ok(Archive {
        prefix,
        input,
        compression,
        name: None,
        shown: "stdin".into(),
    })
}

/// The regular file `input`, opened from `source`. Its first bytes decide
/// the format; the name's extension only when they do not (a v7 tar
/// without the ustar magic), so a misnamed archive still unpacks.
pub fn file(input: File, source: &Path) -> Result<Archive> {
    let mut head = [0u8; 512];
    let mut got = 0;
    while got < head.len() {
        match input.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_failed(e, &format!("reading {}", source.display()))),
        }
    }
    let name = source.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let compression = sniff(&head[..got])
        .or_else(|| by_extension(name))
        .ok_or_else(|| {
            usage(format!(
                "source {}: unsupported format (a directory, or a tar, tar.gz or tar.zst archive)",
                source.display()
            ))
        })?;
    Ok(Archive {
        prefix: Vec::new(),
        input,
        compression,
        name: source
            .file_name()
            .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned()),
        shown: source.display().to_string(),
    })
}

/// The format by magic bytes: gzip `1f 8b`, zstd `28 b5 2f fd`, tar with
/// `ustar` at offset 257 (POSIX and GNU).
pub fn sniff(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if head.get(257..262) == Some(b"ustar") {
        Some(Compression::None)
    } else {
        None
    }
}

fn by_extension(name: &str) -> Option<Compression> {
    if name.ends_with(".tar") {
        Some(Compression::None)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some(Compression::Gzip)
    } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// Hashes every byte read through it and copies it to the signature
/// check's stdin.
struct Tap {
    inner: io::Chain<Cursor<Vec<u8>>, File>,
    sha: Option<Sha256>,
    sink: Option<std::process::ChildStdin>,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(sha) = &mut self.sha {
            sha.update(&buf[..n]);
        }
        if let Some(sink) = &mut self.sink {
            if let Err(e) = io::Write::write_all(sink, &buf[..n]) {
                // ssh-keygen stopped reading: it has refused already (its
                // verdict is reported); unpacking further is wasted.
                self.sink = None;
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("the signature check stopped reading: {e}"),
                ));
            }
        }
        Ok(n)
    }
}

/// `BufReader`, with its buffer on a page boundary: the archive's bytes
/// are copied into it from the page cache, which is much slower into a
/// buffer where malloc puts it (see [`crate::fs::bytes::PageBuf`]).
struct PageBufReader<R> {
    inner: R,
    buf: crate::fs::bytes::PageBuf,
    pos: usize,
    filled: usize,
}

impl<R: Read> PageBufReader<R> {
    fn new(capacity: usize, inner: R) -> PageBufReader<R> {
        PageBufReader {
            inner,
            buf: crate::fs::bytes::PageBuf::new(capacity),
            pos: 0,
            filled: 0,
        }
    }

    /// The reader; bytes buffered and not yet consumed are dropped.
    fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for PageBufReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for PageBufReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.filled {
            self.filled = self.inner.read(self.buf.get())?;
            self.pos = 0;
        }
        Ok(&self.buf.get()[self.pos..self.filled])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.filled);
    }
}

/// The archive's bytes on their way to the decompressor, checked on the way.
pub struct Reader {
    buf: PageBufReader<Tap>,
    compression: Compression,
    expected: Vec<(String, String)>,
    verifying: Option<Verifying>,
    shown: String,
}

impl Reader {
    /// Start reading `archive` (and the signature check, if any).
    pub fn start(archive: Archive, checks: Checks) -> Result<Reader> {
        let mut verifying = checks.signature.map(signature::Ready::start).transpose()?;
        let tap = Tap {
            inner: Cursor::new(archive.prefix).chain(archive.input),
            sha: (!checks.expected.is_empty()).then(Sha256::new),
            sink: verifying.as_mut().map(Verifying::take_stdin),
        };
        Ok(Reader {
            buf: PageBufReader::new(256 * 1024, tap),
            compression: archive.compression,
            expected: checks.expected,
            verifying,
            shown: archive.shown,
        })
    }

    /// The archive, as messages name it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The decompressed tar stream.
    pub fn decoded(&mut self) -> Result<Box<dyn Read + '_>> {
        Ok(match self.compression {
            Compression::None => Box::new(&mut self.buf),
            // Multi-member gzip (concatenated, pigz) is one stream.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut self.buf)),
            Compression::Zstd => {
                let mut dec = zstd::stream::read::Decoder::with_buffer(&mut self.buf)
                    .map_err(|e| usage(format!("{}: not a zstd stream: {e}", self.shown)))?;
                // A frame may ask for a window of terabytes: cap what a
                // hostile archive can make root allocate (128 MiB, zstd's
                // own limit for --long without --memory).
                dec.window_log_max(27)
                    .map_err(|e| Error::op_ctx(e, "setting up zstd"))?;
                Box::new(dec)
            }
        })
    }

    /// The verdicts, once `unpacked` says how unpacking went: a hash or
    /// signature that does not match is named before anything the archive
    /// did wrong (a cut-short upload is best told as a wrong hash), and a
    /// fault of the machine (exit 1) before either.
    pub fn finish(mut self, unpacked: Result<()>) -> Result<()> {
        if let Err(e) = &unpacked {
            if e.kind() != crate::error::Kind::Usage {
                return unpacked;
            }
        }
        if self.expected.is_empty() && self.verifying.is_none() {
            return unpacked;
        }
        // The verdicts cover the whole input, whatever the tar stream
        // left unread after its end.
        if let Err(e) = io::copy(&mut self.buf, &mut io::sink()) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                return Err(read_failed(e, &format!("reading {}", self.shown)));
            }
        }
        let tap = self.buf.into_inner();
        // Closing its stdin ends ssh-keygen's message.
        drop(tap.sink);
        if let Some(sha) = tap.sha {
            let got = crate::fs::bytes::hex(&sha.finalize());
            for (what, want) in &self.expected {
                if &got != want {
                    return Err(usage(format!(
                        "{}: SHA-256 {got} does not match {want} from {what}",
                        self.shown
                    )));
                }
            }
        }
        if let Some(v) = self.verifying.take() {
            v.finish(&self.shown)?;
        }
        unpacked
    }
}

/// A read of the input that failed: the machine's fault for I/O errors,
/// the input's otherwise.
fn read_failed(e: io::Error, what: &str) -> Error {
    if e.raw_os_error().is_some() {
        Error::op_ctx(e, what.to_string())
    } else {
        usage(format!("{what}: {e}"))
    }
}

/// The hash a `SHA256SUMS` file (sha256sum's and systemd-sysupdate's
/// format: `HEX  NAME` or `HEX *NAME` per line) gives for `name`. A line
/// that is not in that format, no entry, or two entries that disagree are
/// refused.
fn lookup_checksum(file: &Path, name: &str) -> Result<String> {
    let shown = file.display();
    let mut text = Vec::new();
    File::open(file)
        .and_then(|f| f.take(MAX_CHECKSUMS + 1).read_to_end(&mut text))
        .map_err(|e| match e.kind() {
            // A file that is not there is bad input; one we may not read,
            // or a failing disk, is the machine's (exit 1), as elsewhere.
            std::io::ErrorKind::NotFound => usage(format!("--checksums {shown}: {e}")),
            _ => Error::operational(format_args!("--checksums {shown}: {e}")),
        })?;
    if text.len() as u64 > MAX_CHECKSUMS {
        return Err(usage(format!(
            "--checksums {shown}: larger than {MAX_CHECKSUMS} bytes"
        )));
    }
    let text = String::from_utf8(text)
        .map_err(|_| usage(format!("--checksums {shown}: not UTF-8 text")))?;
    let mut found: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = line
            .get(..64)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .zip(
                line.get(64..)
                    .and_then(|r| r.strip_prefix("  ").or_else(|| r.strip_prefix(" *"))),
            )
            .filter(|(_, n)| !n.is_empty());
        let Some((hex, entry_name)) = entry else {
            return Err(usage(format!(
                "--checksums {shown}:{}: not a `HEX  NAME` or `HEX *NAME` line",
                i + 1
            )));
        };
        if entry_name != name && entry_name.strip_prefix("./") != Some(name) {
            continue;
        }
        let hex = hex.to_ascii_lowercase();
        match &found {
            Some(h) if *h != hex => {
                return Err(usage(format!(
                    "--checksums {shown}: two different hashes for {name}"
                )))
            }
            _ => found = Some(hex),
        }
    }
    found.ok_or_else(|| usage(format!("--checksums {shown}: no entry for {name}")))
}

/// Parse `--meta KEY=VALUE` pairs: keys of 1–64 `[a-z0-9_.-]`, each once;
/// values of at most 1024 bytes without control characters.
pub fn parse_meta(pairs: &[String]) -> Result<Meta> {
    if pairs.len() > MAX_META {
        return Err(usage(format!("--meta: at most {MAX_META} pairs")));
    }
    let mut meta = Meta::new();
    for pair in pairs {
        let bad = |why: &str| usage(format!("--meta {}: {why}", pair.escape_debug()));
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE"))?;
        if let Some(why) = meta_problem(k, v) {
            return Err(bad(why));
        }
        if meta.insert(k.to_string(), v.to_string()).is_some() {
            return Err(bad("the key is given twice"));
        }
    }
    Ok(meta)
}

/// The entry name `name` without its first `n` components, as GNU tar's
/// `--strip-components` counts them (a leading `./` is one; empty ones
/// between slashes are none); `None` when nothing is left (the entry is
/// skipped).
pub fn strip(name: &Path, n: usize) -> Option<PathBuf> {
    if n == 0 {
        return Some(name.to_path_buf());
    }
    let mut rest = name.as_os_str().as_bytes();
    for _ in 0..n {
        rest = trim_slashes(rest);
        let end = rest.iter().position(|&b| b == b'/')?;
        rest = &rest[end..];
    }
    let rest = trim_slashes(rest);
    (!rest.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(rest)))
}

fn trim_slashes(mut b: &[u8]) -> &[u8] {
    while let Some(r) = b.strip_prefix(b"/") {
        b = r;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_buf_reader_yields_every_byte_once() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        let mut r = PageBufReader::new(4096, &data[..]);
        let mut got = Vec::new();
        let mut small = [0u8; 1000];
        let n = r.read(&mut small).unwrap();
        got.extend_from_slice(&small[..n]);
        let avail = r.fill_buf().unwrap().len();
        assert!(avail > 0 && avail <= 4096 - n);
        got.extend_from_slice(&r.fill_buf().unwrap()[..10]);
        r.consume(10);
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(r.read(&mut small).unwrap(), 0);
        assert!(r.fill_buf().unwrap().is_empty());
    }

    #[test]
    fn strip_counts_like_gnu_tar() {
        let s = |p: &str, n| strip(Path::new(p), n).map(|p| p.display().to_string());
        assert_eq!(s("app-1.2/bin/x", 1).as_deref(), Some("bin/x"));
        assert_eq!(s("./app-1.2/bin/x", 1).as_deref(), Some("app-1.2/bin/x"));
        assert_eq!(s("./app-1.2/bin/x", 2).as_deref(), Some("bin/x"));
        assert_eq!(s("app-1.2/", 1), None);
        assert_eq!(s("app-1.2", 1), None);
        assert_eq!(s("README", 1), None);
        assert_eq!(s("a//b/c", 1).as_deref(), Some("b/c"));
        assert_eq!(s("/abs/x", 1).as_deref(), Some("x"));
        assert_eq!(s("a/b/", 1).as_deref(), Some("b/"));
        assert_eq!(s("x", 0).as_deref(), Some("x"));
    }

    #[test]
    fn sniff_magic() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Some(Compression::Gzip));
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Some(Compression::Zstd));
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(sniff(&tar), Some(Compression::None));
        assert_eq!(sniff(b"PK\x03\x04"), None);
        assert_eq!(sniff(&[]), None);
    }

    #[test]
    fn meta_rules() {
        let m = parse_meta(&["git=abc".into(), "build.url=https://x/1".into()]).unwrap();
        assert_eq!(m["git"], "abc");
        for bad in [
            &["noequals"][..],
            &["=v"],
            &["Git=x"],
            &["a b=c"],
            &["k=a\nb"],
            &["k=1", "k=2"],
        ] {
            let pairs: Vec<String> = bad.iter().map(|p| p.to_string()).collect();
            assert!(parse_meta(&pairs).is_err(), "{bad:?}");
        }
        assert!(parse_meta(&[format!("k={}", "v".repeat(1025))]).is_err());
        assert!(parse_meta(&[format!("{}=v", "k".repeat(65))]).is_err());
        assert!(parse_meta(&["k=".into()]).is_ok());
    }

    #[test]
    fn checksum_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("SHA256SUMS");
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        std::fs::write(&f, format!("{a}  app.tar.zst\n{b} *other.tar\n\n")).unwrap();
        assert_eq!(lookup_checksum(&f, "app.tar.zst").unwrap(), a);
        assert_eq!(lookup_checksum(&f, "other.tar").unwrap(), "b".repeat(64));
        assert!(lookup_checksum(&f, "missing.tar").is_err());
        std::fs::write(&f, format!("{a} app.tar.zst\n")).unwrap();
        assert!(lookup_checksum(&f, "app.tar.zst").is_err());
        std::fs::write(&f, format!("{a}  x\n{b}  x\n")).unwrap();
        assert!(lookup_checksum(&f, "x").is_err());
    }
}
