//! The releases of an app: listing (newest first, with what history knows
//! about each) and pruning that never removes a release anyone may need.

use crate::config::app::App;
use crate::error::Result;
use crate::fs::dir::Dir;
use crate::host::cancel::Cancel;
use crate::state::history;
use crate::state::history::Summary;
use crate::state::lock;
use crate::state::pending;
use crate::state::record::staged;
use rustix::fs::FileType;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub id: String,
    /// When it was staged (RFC 3339), see [`staged`]; `None` when nothing
    /// recorded it and the file system keeps no birth times.
    pub created: Option<String>,
    pub current: bool,
    pub previous: bool,
    pub bad: bool,
    /// The sum of its file sizes as staged (from its staging record);
    /// `None` when it has no record with a manifest.
    pub size: Option<u64>,
    /// `stage --meta` pairs, from its staging record.
    pub meta: BTreeMap<String, String>,
    /// What staging shared with the release current then (its staging
    /// record's account; `None` when nothing was shared or unrecorded).
    pub dedup: Option<crate::state::record::DedupRecord>,
}

/// Everything `list`, `status` and `prune` need, read once.
pub struct Inventory {
    /// Newest first: by staging time (never the directory's mtime, which an
    /// app writing into its release changes), undated releases last; ties
    /// broken by version-aware id order.
    pub releases: Vec<Release>,
    pub current: Option<String>,
    pub summary: Summary,
    pub pending: Option<pending::Pending>,
}

pub fn inventory(app: &App) -> Result<Inventory> {
    let state = app.state_dir(false)?;
    let summary = history::summary(state.as_ref())?;
    let pending = pending::read(state.as_ref())?;
    let current = app.root.current()?;
    let dir = app.root.releases_dir(false)?;
    let releases = on_disk(app)?
        .into_iter()
        .map(|(id, time)| {
            // Only what the record says about the release: a record that
            // cannot be read (planted, damaged, oversized) leaves size and
            // meta unknown and is reported in one line; it does not fail
            // the listing.
            let header = dir.as_ref().and_then(|d| {
                crate::state::record::read_header(d, &id)
                    .map_err(|e| crate::log::warn(&e.one_line()))
                    .ok()
                    .flatten()
            });
            let (size, meta, dedup) =
                header.map_or((None, BTreeMap::new(), None), |h| (h.size, h.meta, h.dedup));
            Release {
                current: current.as_deref() == Some(id.as_str()),
                previous: summary.previous.as_deref() == Some(id.as_str()),
                bad: summary.bad.contains(&id),
                created: time.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                size,
                meta,
                dedup,
                id,
            }
        })
        .collect();
    Ok(Inventory {
        releases,
        current,
        summary,
        pending,
    })
}

/// The release ids, newest first, as `list` orders them. Reads only
/// `releases/` (no history, no intent record, no lock): what shell
/// completion offers.
pub fn release_ids(app: &App) -> Result<Vec<String>> {
    Ok(on_disk(app)?.into_iter().map(|(id, _)| id).collect())
}

/// The releases under `releases/` with their staging times, newest first.
fn on_disk(app: &App) -> Result<Vec<(String, Option<SystemTime>)>> {
    let mut releases = Vec::new();
    // A symlinked releases/ is refused here, not followed.
    if let Some(dir) = app.root.releases_dir(false)? {
        let recorded = staged::times(&dir);
        for entry in dir.entries()? {
            let Some(id) = entry.name.to_str().map(str::to_string) else {
                continue;
            };
            // Temp trees (.stage-*, .prune-*), records and stray names are
            // not releases.
            if crate::release_id::validate(&id).is_err() {
                continue;
            }
            // lstat: real directories only, no symlinks.
            let Some(st) = dir.stat(&id)? else { continue };
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                continue;
            }
            let time = recorded
                .get(&id)
                .copied()
                .or_else(|| staged::birth_time(&dir, &id));
            releases.push((id, time));
        }
    }
    // `Option`'s order puts `None` first; reversed, undated releases go last.
    releases.sort_by(|(a, a_time), (b, b_time)| b_time.cmp(a_time).then_with(|| version_cmp(b, a)));
    Ok(releases)
}

/// What `prune` did: the plan it carried out and the temp trees of killed
/// runs it removed.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub plan: PrunePlan,
    pub leftovers: Vec<String>,
}

/// Remove what [`plan_prune`] says, under the app's lock: an activation
/// must not pick a release being deleted, and the plan is made under the
/// lock so that it sees the last activation's outcome.
pub fn prune(app: &App, keep: usize, lock_timeout: Duration) -> Result<Pruned> {
    let state = app.state_dir(true)?.expect("created");
    let _lock = lock::acquire(
        &app.root,
        &state,
        &lock::Holder::me("(prune)"),
        lock_timeout,
        &Cancel::never(),
    )?;
    let plan = plan_prune(&inventory(app)?, keep);
    let mut leftovers = Vec::new();
    if let Some(releases) = app.root.releases_dir(false)? {
        for id in &plan.remove {
            remove_release(&releases, id)?;
            crate::log::info(&format!("{}: removed release {id}", app.label()));
        }
        leftovers = remove_leftovers(&releases)?;
        staged::forget_orphans(&releases)?;
    }
    Ok(Pruned { plan, leftovers })
}

/// `mark-bad` / `mark-good` of release `id`: one history entry, under the
/// app's lock so that an activation reading the history sees it whole.
pub fn mark(
    app: &App,
    id: &str,
    event: history::Event,
    reason: &str,
    lock_timeout: Duration,
) -> Result<()> {
    app.root.check_release(id)?;
    let state = app.state_dir(true)?.expect("created");
    let _lock = lock::acquire(
        &app.root,
        &state,
        &lock::Holder::me(id),
        lock_timeout,
        &Cancel::never(),
    )?;
    let mut entry =
        history::Entry::new(event, app.name.as_deref(), None, Some(id)).with_reason(reason);
    entry.live = app.root.current()?;
    history::append(&state, &entry)?;
    crate::state::journal::record(&entry);
    Ok(())
}

/// What prune would remove and what it keeps on purpose.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PrunePlan {
    pub remove: Vec<String>,
    pub keep: Vec<String>,
    pub protected: Vec<String>,
}

/// Keep the `keep` newest releases that are not marked bad, and always
/// current, previous, both ends of a pending activation, the last release
/// committed successfully and the one `rollback` would pick. Bad releases
/// are removed unless protected.
pub fn plan_prune(inv: &Inventory, keep: usize) -> PrunePlan {
    let mut protected: HashSet<&str> = HashSet::new();
    protected.extend(inv.current.as_deref());
    protected.extend(inv.summary.previous.as_deref());
    protected.extend(inv.summary.last_good.as_deref());
    // The release `rollback` would pick, which differs from "previous" once
    // the previous release has gone bad.
    let present: HashSet<&str> = inv.releases.iter().map(|r| r.id.as_str()).collect();
    protected.extend(
        inv.summary
            .rollback_target(inv.current.as_deref(), |id| present.contains(id)),
    );
    if let Some(p) = &inv.pending {
        protected.insert(p.to.as_str());
        protected.extend(p.from.as_deref());
    }
    let mut plan = PrunePlan {
        remove: Vec::new(),
        keep: Vec::new(),
        protected: Vec::new(),
    };
    // Bad releases do not count toward `keep`: N failed deploys in a row
    // must not push the good releases out.
    let mut good = 0;
    for r in &inv.releases {
        if !r.bad && good < keep {
            good += 1;
            plan.keep.push(r.id.clone());
        } else if protected.contains(r.id.as_str()) {
            plan.protected.push(r.id.clone());
        } else {
            plan.remove.push(r.id.clone());
        }
    }
    plan
}

/// Remove one release: first renamed out of the way (so its id never names
/// a half-deleted tree), then deleted through directory handles.
pub fn remove_release(releases: &Dir, id: &str) -> Result<()> {
    let doomed = format!(".prune-{id}-{}", std::process::id());
    releases.rename(id, &doomed)?;
    staged::forget(releases, id);
    releases.remove_tree(&doomed)
}

/// Remove temp trees left behind by killed `stage` or `prune` runs.
pub fn remove_leftovers(releases: &Dir) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in releases.entries()? {
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        let owner = name
            .strip_prefix(".stage-")
            .or_else(|| {
                name.strip_prefix(".prune-")
                    .and_then(|r| r.rsplit_once('-').map(|(_, pid)| pid))
            })
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        // Only trees whose creating process is gone: a stage may be running.
        // One that cannot be removed is reported and skipped, so a planted
        // leftover cannot make every later prune fail.
        if let Some(pid) = owner {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                match releases.remove_tree(name) {
                    Ok(()) => removed.push(name.to_string()),
                    Err(e) => crate::log::warn(&e.one_line()),
                }
            }
        }
    }
    Ok(removed)
}

/// Version-aware order: digit runs compare as numbers, so 10.0 > 9.0.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (trim_zeros(&x[..nx]), trim_zeros(&y[..ny]));
                let ord = dx.len().cmp(&dy.len()).then_with(|| dx.cmp(dy));
                if ord != Ordering::Equal {
                    return ord;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n.min(d.len().saturating_sub(1))..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order() {
        assert_eq!(version_cmp("10.0", "9.0"), Ordering::Greater);
        assert_eq!(version_cmp("1.0", "1.0"), Ordering::Equal);
        assert_eq!(version_cmp("v2", "v10"), Ordering::Less);
        assert_eq!(
            version_cmp("20261125T170443Z-2", "20261125T170443Z"),
            Ordering::Greater
        );
    }

    fn inv(ids: &[&str], current: &str, summary: Summary) -> Inventory {
        Inventory {
            releases: ids
                .iter()
                .map(|id| Release {
                    id: id.to_string(),
                    created: None,
                    current: *id == current,
                    previous: false,
                    bad: summary.bad.contains(*id),
                    size: None,
                    meta: BTreeMap::new(),
                    dedup: None,
                })
                .collect(),
            current: Some(current.to_string()),
            summary,
            pending: None,
        }
    }

    #[test]
    fn prune_protects_current_previous_and_last_good() {
        let summary = Summary {
            previous: Some("v2".into()),
            last_good: Some("v1".into()),
            ..Summary::default()
        };
        // Newest first: v5..v1; three failed releases on top, current is v1.
        let i = inv(&["v5", "v4", "v3", "v2", "v1"], "v1", summary);
        let plan = plan_prune(&i, 1);
        assert_eq!(plan.keep, vec!["v5"]);
        assert_eq!(plan.protected, vec!["v2", "v1"]);
        assert_eq!(plan.remove, vec!["v4", "v3"]);
    }

    /// Bad releases do not count toward `keep`, and go unless protected.
    #[test]
    fn prune_keeps_n_good_releases() {
        let summary = Summary {
            previous: Some("v1".into()),
            last_good: Some("v4".into()),
            bad: ["v5", "v3"].map(String::from).into_iter().collect(),
            ..Summary::default()
        };
        let i = inv(&["v5", "v4", "v3", "v2", "v1"], "v4", summary);
        let plan = plan_prune(&i, 2);
        assert_eq!(plan.keep, vec!["v4", "v2"]);
        assert_eq!(plan.protected, vec!["v1"]);
        assert_eq!(plan.remove, vec!["v5", "v3"]);
    }

    #[test]
    fn prune_keep_zero_still_protects() {
        let i = inv(&["b", "a"], "a", Summary::default());
        let plan = plan_prune(&i, 0);
        assert_eq!(plan.remove, vec!["b"]);
        assert_eq!(plan.protected, vec!["a"]);
    }
}
