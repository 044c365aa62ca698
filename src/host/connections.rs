//! Open TCP connections to a local port, read from the kernel's socket
//! tables (`/proc/net/tcp`, `/proc/net/tcp6`): how a blue/green drain knows
//! that the instance no longer fronted has finished what it was serving.
//!
//! The tables are the kernel's, not a user's, but they grow with the
//! host's connections: they are read a line at a time, never whole.

use std::io::{BufRead, BufReader};

/// `st` of an established connection in the tables.
const ESTABLISHED: &str = "01";

/// Longest line taken from a table (a line is about 150 bytes); a longer
/// one is not a socket line and is skipped.
const MAX_LINE: usize = 512;

/// Established TCP connections (IPv4 and IPv6) whose local end is `port`
/// (the server's side of a connection to a local listener), as seen from
/// this network namespace. Connections this host makes to `port`
/// elsewhere do not count.
pub fn established(port: u16) -> std::io::Result<usize> {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::File::open(table) {
            Ok(f) => n += count(BufReader::new(f), port)?,
            // No IPv6 in this kernel.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Established connections with `port` as their local end in one table.
fn count(mut table: impl BufRead, port: u16) -> std::io::Result<usize> {
    let mut n = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read =
            std::io::Read::take(&mut table, MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(n);
        }
        if line.len() > MAX_LINE {
            // Skip the rest of an overlong line.
            let mut rest = Vec::new();
            table.read_until(b'\n', &mut rest)?;
            continue;
        }
        if matches(&String::from_utf8_lossy(&line), port) {
            n += 1;
        }
    }
}

/// Whether one table line is an established connection with `port` as
/// its local port: `sl local rem st …`, addresses `HEX:PORT`.
fn matches(line: &str, port: u16) -> bool {
    let mut fields = line.split_whitespace().skip(1);
    let (Some(local), Some(_remote), Some(state)) = (fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    state == ESTABLISHED && port_of(local) == Some(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F41 01 00000000:00000000 00:00000000 00000000    33        0 2 1 0 20 4 30 10 -1
   2: 0100007F:1F41 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0100007F:C351 0100007F:1F42 01 00000000:00000000 00:00000000 00000000    33        0 4 1 0 20 4 30 10 -1
   4: 0100007F:C352 0100007F:1F41 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0 0 0 0 0 0
";

    #[test]
    fn counts_the_local_ends_of_established_connections_only() {
        // 8001 = 0x1F41: a listener (0A), the server's end of a connection
        // (its client's end has 8001 as the remote port), and a TIME_WAIT
        // (06); 8002 is only ever a remote port (a connection elsewhere).
        assert_eq!(count(TABLE.as_bytes(), 8001).unwrap(), 1);
        assert_eq!(count(TABLE.as_bytes(), 8002).unwrap(), 0);
        assert_eq!(count(TABLE.as_bytes(), 0xC350).unwrap(), 1);
    }

    #[test]
    fn an_overlong_line_is_skipped_not_read_whole() {
        let long = format!("{}\n{TABLE}", "x".repeat(100_000));
        assert_eq!(count(long.as_bytes(), 8001).unwrap(), 1);
        let garbage = "   9: zz:1F41 yy:zz 01\n   7: 0100007F:1F41\n   8: q:zz 0:1F41 01\n";
        assert_eq!(count(garbage.as_bytes(), 8001).unwrap(), 1);
    }

    #[test]
    fn sees_a_live_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(established(port).unwrap(), 0);
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(established(port).unwrap(), 1);
        drop((c, s));
    }
}
