//! Limits on what a tar header can make root hold in memory, enforced
//! before the `tar` crate sees the header.
//!
//! The `tar` crate reads the data of a GNU long name (`L`), a GNU long
//! link (`K`) and a PAX header (`x`) into memory whole, as large as the
//! header says; a GNU sparse entry (`S`) makes it build a list of every
//! extension block that follows. A 33 KiB `.tar.zst` whose `L` header claims
//! 1 GiB of zeros made root allocate gigabytes and abort before the
//! archive's hash or signature was judged. [`HeaderCap`] sits between the
//! decompressor and the `tar` crate and follows the stream's 512-byte block
//! structure the way the crate does (PAX `size` overriding the next
//! header's, the end at the first zero block), so it sees every header
//! first, and fails the read that would complete one that asks for more
//! than these limits:
//!
//! - a GNU long name or link target: [`MAX_LONG_NAME`] (4 KiB, `PATH_MAX`);
//! - a PAX header, local (`x`) or global (`g`): [`MAX_PAX`] (1 MiB: long
//!   paths, link targets and extended attributes of real archives fit
//!   many times over);
//! - GNU sparse entries (`S`) are refused outright: `stage` never stages
//!   sparse files (see `unpack`), and their extension blocks are unbounded.
//!
//! Everything else the crate allocates is bounded by these: one long name,
//! one long link and one PAX header at most per entry (a second one is an
//! error in the crate), entry data is streamed.

use std::io::{self, Read};

/// Largest GNU long name or long link target accepted (data bytes, its
/// trailing NUL included).
pub const MAX_LONG_NAME: u64 = 4096;
/// Largest PAX extended header accepted (local or global).
pub const MAX_PAX: u64 = 1 << 20;

const BLOCK: usize = 512;

/// The reason an archive was refused by [`HeaderCap`], carried in the
/// `io::Error` of the failed read so `stage` can report it as is.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The refusal inside `e`, if `e` comes from a [`HeaderCap`].
pub fn refused(e: &io::Error) -> Option<&Refused> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refused>())
}

/// Where the stream is in the tar block structure.
enum State {
    /// Filling a header block.
    Header { filled: usize },
    /// Inside an entry's data (`data` bytes left) and its padding (`pad`).
    Data { data: u64, pad: u64, pax: bool },
    /// Past the end-of-archive block: the rest is not tar.
    End,
}

/// A reader of a tar stream that refuses oversized headers (see the module
/// documentation). Once it has refused, every later read fails the same way.
pub struct HeaderCap<R> {
    inner: R,
    archive: String,
    state: State,
    block: Box<[u8; BLOCK]>,
    /// The PAX header being read, to learn the `size` it sets.
    pax: Vec<u8>,
    /// The size a PAX header set for the next entry.
    pax_size: Option<u64>,
    /// Headers seen, and the stream offset of the current one (for messages).
    headers: u64,
    offset: u64,
    header_at: u64,
    failed: Option<Refused>,
}

impl<R: Read> HeaderCap<R> {
    /// `archive` names the archive in refusals.
    pub fn new(inner: R, archive: &str) -> HeaderCap<R> {
        HeaderCap {
            inner,
            archive: archive.to_string(),
            state: State::Header { filled: 0 },
            block: Box::new([0; BLOCK]),
            pax: Vec::new(),
            pax_size: None,
            headers: 0,
            offset: 0,
            header_at: 0,
            failed: None,
        }
    }

    /// Follow the block structure over `bytes`, the next bytes of the stream.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Refused> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::End => return Ok(()),
                State::Header { filled } => {
                    let n = (BLOCK - *filled).min(bytes.len());
                    self.block[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    let full = *filled == BLOCK;
                    self.advance(n, &mut bytes);
                    if full {
                        self.state = self.header()?;
                    }
                }
                State::Data { data, pad, pax } => {
                    let n = (*data + *pad).min(bytes.len() as u64) as usize;
                    let in_data = (*data).min(n as u64) as usize;
                    if *pax {
                        self.pax.extend_from_slice(&bytes[..in_data]);
                    }
                    *data -= in_data as u64;
                    *pad -= (n - in_data) as u64;
                    let done = *data == 0 && *pad == 0;
                    let was_pax = *pax;
                    self.advance(n, &mut bytes);
                    if done {
                        if was_pax {
                            self.pax_size = pax_size(&self.pax);
                            self.pax = Vec::new();
                        }
                        self.state = State::Header { filled: 0 };
                    }
                }
            }
        }
        Ok(())
    }

    fn advance(&mut self, n: usize, bytes: &mut &[u8]) {
        self.offset += n as u64;
        *bytes = &bytes[n..];
    }

    /// Judge the full header block in `self.block`: what follows it.
    fn header(&mut self) -> Result<State, Refused> {
        let at = self.offset - BLOCK as u64;
        if self.block.iter().all(|&b| b == 0) {
            // The crate stops at the first zero block.
            return Ok(State::End);
        }
        self.headers += 1;
        self.header_at = at;
        let h = tar::Header::from_byte_slice(&self.block[..]);
        let kind = h.entry_type();
        let size = h
            .entry_size()
            .map_err(|e| self.refuse(format!("its size is unreadable ({e})")))?;
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        let limit = if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            Some((MAX_LONG_NAME, "a GNU long name or link target"))
        } else if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            Some((MAX_PAX, "a PAX header"))
        } else {
            None
        };
        if let Some((max, what)) = limit {
            if size > max {
                return Err(
                    self.refuse(format!("{what} of {size} bytes (the limit is {max} bytes)"))
                );
            }
        }
        if kind.is_gnu_sparse() {
            return Err(self.refuse("a GNU sparse file (sparse files are not supported)".into()));
        }
        // As the crate does: a PAX `size` applies to the next header that
        // is not itself an extension; an `L`, `K` or `x` in a GNU or ustar
        // header describes the next entry, anything else ends the entry.
        let size = match self.pax_size {
            Some(pax) if !extension => pax,
            _ => size,
        };
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let continues = recognized
            && (kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions());
        if !continues {
            self.pax_size = None;
        }
        let pax = recognized && kind.is_pax_local_extensions();
        let padded = size
            .checked_next_multiple_of(BLOCK as u64)
            .ok_or_else(|| self.refuse(format!("its size {size} overflows")))?;
        if size == 0 {
            if pax {
                self.pax_size = None;
            }
            return Ok(State::Header { filled: 0 });
        }
        Ok(State::Data {
            data: size,
            pad: padded - size,
            pax,
        })
    }

    fn refuse(&self, what: String) -> Refused {
        Refused(format!(
            "{}: entry {} (header at byte {}) is {what}",
            self.archive, self.headers, self.header_at
        ))
    }
}

/// The `size` a PAX header sets, as the `tar` crate reads it: the first
/// `size` record, if the records up to it parse.
fn pax_size(data: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for HeaderCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(r) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, r.clone()));
        }
        let n = self.inner.read(buf)?;
        if let Err(r) = self.feed(&buf[..n]) {
            self.failed = Some(r.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, r));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header block of type `kind` claiming `size` bytes.
    fn header(kind: u8, name: &str, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(data.len().next_multiple_of(BLOCK), 0);
        v
    }

    /// Read `stream` through a cap in chunks of `chunk` bytes.
    fn read_all(stream: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
        let mut cap = HeaderCap::new(stream, "a.tar");
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            match cap.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(refused(&e).expect("a refusal").0.clone()),
            }
        }
    }

    #[test]
    fn oversized_long_names_and_pax_headers_are_refused_at_their_header() {
        for (kind, max) in [
            (b'L', MAX_LONG_NAME),
            (b'K', MAX_LONG_NAME),
            (b'x', MAX_PAX),
            (b'g', MAX_PAX),
        ] {
            let mut s = header(b'0', "ok", 3);
            s.extend(padded(b"abc"));
            s.extend(header(kind, "././@LongLink", max + 1));
            for chunk in [1, 7, 512, 4096] {
                let e = read_all(&s, chunk).unwrap_err();
                assert!(
                    e.starts_with("a.tar: entry 2 (header at byte 1024) is a "),
                    "{e}"
                );
                assert!(e.contains(&format!("of {} bytes", max + 1)), "{e}");
            }
            // At the limit it passes.
            let mut s = header(kind, "././@LongLink", max);
            s.extend(vec![b'a'; max as usize].iter().copied().chain([0; BLOCK]));
            assert!(read_all(&padded(&s), 4096).is_ok());
        }
    }

    #[test]
    fn sizes_set_by_pax_are_followed() {
        // A PAX size of 1024 makes the two blocks after the file header its
        // data: the `L` header hidden there is data, not a header.
        let rec = "13 size=1024\n";
        let mut s = header(b'x', "pax", rec.len() as u64);
        s.extend(padded(rec.as_bytes()));
        s.extend(header(b'0', "f", 0));
        s.extend(header(b'L', "hidden", 1 << 30));
        s.extend(vec![0; BLOCK]);
        s.extend(header(b'L', "real", 1 << 30));
        let e = read_all(&s, 100).unwrap_err();
        assert!(e.contains("entry 3 (header at byte 2560)"), "{e}");
    }

    #[test]
    fn the_end_block_ends_the_structure_and_sparse_entries_are_refused() {
        let mut s = vec![0; BLOCK];
        s.extend(header(b'L', "after the end", 1 << 30));
        assert_eq!(read_all(&s, 300).unwrap(), s);
        let e = read_all(&header(b'S', "sparse", 10), 512).unwrap_err();
        assert!(e.contains("sparse files are not supported"), "{e}");
    }
}
