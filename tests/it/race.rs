//! Readers open `current/version` in a tight loop while `current` is swapped
//! thousands of times. releasectl's rename(2) swap must never make a read
//! fail; the unlink + symlink baseline, run by the same harness in the same
//! test, must, or the harness could not see a gap at all.

use crate::common;

use common::Dir;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

const SWAPS: usize = 2000;
const READERS: usize = 1;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    saw_v1: AtomicBool,
    saw_v2: AtomicBool,
}

/// Reader threads: every open or read that fails, or reads anything but a
/// whole version, is a failed read.
struct Readers {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    threads: Vec<JoinHandle<()>>,
}

impl Readers {
    fn start(file: PathBuf) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let threads = (0..READERS)
            .map(|_| {
                let (stop, counts, file) = (stop.clone(), counts.clone(), file.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match std::fs::read(&file).as_deref() {
                            Ok(b"v1\n") => {
                                counts.saw_v1.store(true, Ordering::Relaxed);
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(b"v2\n") => {
                                counts.saw_v2.store(true, Ordering::Relaxed);
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Readers {
            stop,
            counts,
            threads,
        }
    }

    fn failed(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }

    /// Stop and return (ok, failed, saw both versions).
    fn finish(self) -> (u64, u64, bool) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let c = &self.counts;
        (
            c.ok.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.saw_v1.load(Ordering::Relaxed) && c.saw_v2.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn readers_never_see_a_gap_with_releasectl_but_do_with_unlink_and_symlink() {
    let d = Dir::on_tmpfs();
    d.releases(&["v1", "v2"]);
    d.cmd().args(["activate", "v1"]).ok();
    let history_before = d.history().len();

    // 1. releasectl, one process per swap, as an operator or a unit would run it.
    let readers = Readers::start(d.path("current/version"));
    for i in 0..SWAPS {
        let id = if i % 2 == 0 { "v2" } else { "v1" };
        let r = d.cmd().args(["-q", "activate", id]).run();
        assert_eq!(r.code, Some(0), "swap {i} failed\n{r}");
    }
    let (ok, failed, both) = readers.finish();
    println!("releasectl activate x{SWAPS}: {ok} reads ok, {failed} failed");
    assert_eq!(
        failed, 0,
        "a reader saw a missing or partial `current` during releasectl's swaps"
    );
    assert!(
        both,
        "readers never saw both releases: the swaps did not happen"
    );
    assert_eq!(
        d.history().len() - history_before,
        SWAPS,
        "one history line per swap"
    );
    d.assert_current_complete();

    // 2. The baseline: unlink + symlink, the same readers. Bounded: it stops
    //    at the first swap after which a read has failed, or after 50x SWAPS.
    let readers = Readers::start(d.path("current/version"));
    let link = d.path("current");
    let mut swaps = 0;
    while swaps < 50 * SWAPS && (swaps < SWAPS || readers.failed() == 0) {
        let target = if swaps % 2 == 0 {
            "releases/v2"
        } else {
            "releases/v1"
        };
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(target, &link).unwrap();
        swaps += 1;
    }
    let (ok, failed, _) = readers.finish();
    println!("unlink+symlink x{swaps}: {ok} reads ok, {failed} failed");
    assert!(
        failed > 0,
        "the baseline showed no gap: this harness cannot tell atomic from not"
    );
}
