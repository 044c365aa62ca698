//! Bytes on their way to or from a file: a page-aligned buffer, a copy
//! that takes the SHA-256 of what it writes, and hex.

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

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
        crate::progress::bytes(n as u64);
    }
    crate::progress::file();
    Ok((size, hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Sha256;

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
}
