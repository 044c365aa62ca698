//! Named fault points for the transaction's unit tests: a test arms a
//! point ("history.append") and the next pass through it fails with EIO,
//! once. In a normal build every point is an empty inline function.

/// The points, where they sit.
pub mod point {
    /// Writing `pending.json` (before the swap).
    pub const PENDING_WRITE: &str = "pending.write";
    /// The fsync of ROOT after `current` was renamed (the link is in place).
    pub const SWAP_SYNC: &str = "swap.sync";
    /// Appending a line to `history.jsonl` (the commit record, or another).
    pub const HISTORY_APPEND: &str = "history.append";
}

#[cfg(not(test))]
#[inline(always)]
pub fn check(_point: &'static str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
thread_local! {
    static ARMED: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Fail the next pass through `point` on this thread.
#[cfg(test)]
pub fn arm(point: &'static str) {
    ARMED.with(|a| a.borrow_mut().push(point));
}

#[cfg(test)]
pub fn check(point: &'static str) -> std::io::Result<()> {
    let hit = ARMED.with(|a| {
        let mut armed = a.borrow_mut();
        let at = armed.iter().position(|p| *p == point);
        at.map(|i| armed.remove(i)).is_some()
    });
    if hit {
        return Err(std::io::Error::from_raw_os_error(
            rustix::io::Errno::IO.raw_os_error(),
        ));
    }
    Ok(())
}
