//! `list`: the releases of an app.

use super::{describe_dedup, show_meta};
use crate::cli::output::Output;
use crate::config::app::App;
use crate::error::Result;
use crate::state::store;

/// `list`'s report (schema `list`), serialized straight from the inventory.
#[derive(serde::Serialize)]
pub(super) struct ListReport<'a> {
    pub(super) app: Option<&'a str>,
    pub(super) releases: &'a [store::Release],
}

pub(super) fn run(app: &App, out: &Output) -> Result<()> {
    let inv = store::inventory(app)?;
    let report = ListReport {
        app: app.name.as_deref(),
        releases: &inv.releases,
    };
    out.print(&report, || {
        let mut t = String::new();
        for r in &inv.releases {
            let mut marks = Vec::new();
            if r.current {
                marks.push("current");
            }
            if r.previous {
                marks.push("previous");
            }
            if r.bad {
                marks.push("bad");
            }
            let created = r.created.as_deref().unwrap_or("-");
            let size = r.size.map_or("-".into(), human_size);
            let shared = r
                .dedup
                .as_ref()
                .map(|d| format!("  shared: {}", describe_dedup(d)))
                .unwrap_or_default();
            let line = format!(
                "{:<32} {created:<20}  {size:>9}  {:<16} {}{shared}",
                r.id,
                marks.join(","),
                show_meta(&r.meta)
            );
            t += line.trim_end();
            t.push('\n');
        }
        t
    });
    Ok(())
}

/// A size for people: bytes, KiB, MiB, GiB (powers of 1024).
fn human_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
