//! Blue/green overlap (`[bluegreen]`): the new release starts in a second
//! instance of the app's template unit while the old one keeps serving, is
//! checked on its own port, and only then does the front (an nginx
//! upstream include) name it; the old instance is stopped after the commit.
//!
//! What serves is told by two things on disk, each replaced by rename(2),
//! so a SIGKILL at any instant leaves an answer: the front file names one
//! slot's port, and `ROOT/slots/<slot>` names the release each slot runs.
//! No other record is kept.

use crate::config::app::App;
use crate::config::{Action, BlueGreen};
use crate::error::{Error, Result};
use crate::fs::dir::{Access, Dir};
use crate::host::cancel::Cancel;
use crate::host::connections;
use crate::host::notify;
use crate::host::services::ServiceManager;
use crate::log;
use anyhow::Context;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// The slots of one activation: the one fronted now (none before the
/// first), and the one the new release starts in.
#[derive(Debug, Clone, PartialEq)]
pub struct Slots {
    pub live: Option<String>,
    pub idle: String,
}

/// Which slot takes the new release: the one not fronted.
pub fn slots(bg: &BlueGreen) -> Result<Slots> {
    let live = fronted(bg)?;
    let idle = bg
        .slots
        .iter()
        .map(|(s, _)| s)
        .find(|s| Some(*s) != live.as_ref())
        .expect("two slots")
        .clone();
    Ok(Slots { live, idle })
}

/// The front's directory, and the file's name in it. Root writes there, so
/// it must be root's and writable by root alone: anyone else could plant
/// a name in it or replace what nginx includes. So must every directory on
/// the way to it (a sticky one like `/tmp` aside, where nobody else can
/// rename what root put): whoever can rename one could swap in a symlink
/// and choose where root writes, or rename the front's directory away and
/// put their own in its place for nginx to include. It is opened one name
/// at a time from `/`, no symlink followed, so what was checked is the
/// handle written through.
fn front_dir(bg: &BlueGreen) -> Result<(Dir, String)> {
    let shown = bg.front.display();
    let bad = |what: &dyn std::fmt::Display| {
        Error::operational(format_args!("bluegreen.front {shown}: {what}"))
    };
    let name = bg
        .front
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| bad(&"has no file name"))?
        .to_string();
    let parent = bg.front.parent().ok_or_else(|| bad(&"has no directory"))?;
    let mut dir = Dir::open_path(Path::new("/"))?.expect("/ exists");
    let mut walked = PathBuf::from("/");
    let components = parent.components().skip(1);
    let last = components.clone().count();
    for (i, part) in std::iter::once(None)
        .chain(components.map(Some))
        .enumerate()
    {
        if let Some(part) = part {
            let Component::Normal(part) = part else {
                return Err(bad(&"must be a plain absolute path (no . or ..)"));
            };
            walked.push(part);
            let part = part.to_str().ok_or_else(|| bad(&"is not UTF-8"))?;
            dir = match dir.open_dir(part) {
                Ok(Some(d)) => d,
                Ok(None) => {
                    return Err(bad(&format_args!(
                        "{} does not exist; create it (root's, mode 0755)",
                        walked.display()
                    )))
                }
                Err(e) => return Err(bad(&e.one_line())),
            };
        }
        root_only(&dir, &walked, i < last).map_err(|why| bad(&why))?;
    }
    Ok((dir, name))
}

/// Whether `dir` (at `path`) is ours and writable by us alone. On the way
/// to the front's directory (`ancestor`), root's directories count as ours,
/// and a sticky one anyone may write in (`/tmp`) is fine. Ours is root's,
/// but in unit tests.
fn root_only(dir: &Dir, path: &Path, ancestor: bool) -> std::result::Result<(), String> {
    let st = dir.stat_self().map_err(|e| e.one_line())?;
    let me = rustix::process::geteuid().as_raw();
    let (uid, mode) = (st.st_uid, st.st_mode & 0o7777);
    let owner_ok = uid == me || (ancestor && uid == 0);
    let mode_ok = mode & 0o022 == 0 || (ancestor && mode & 0o1000 != 0);
    if owner_ok && mode_ok {
        return Ok(());
    }
    let who = match me {
        0 => "root".to_string(),
        _ => format!("uid {me}"),
    };
    Err(format!(
        "{} must be {who}'s and writable by {who} only (it is uid {uid}, mode {mode:o})",
        path.display()
    ))
}

/// Largest front file read back (ours is one line).
const MAX_FRONT: u64 = 64 * 1024;

/// The slot the front names now; `None` when there is no front file yet or
/// it names no slot (written by hand: the next activation replaces it).
pub fn fronted(bg: &BlueGreen) -> Result<Option<String>> {
    let (dir, name) = front_dir(bg)?;
    let Some(f) = dir.open_file(&name, Access::Read)? else {
        return Ok(None);
    };
    let mut text = String::new();
    f.take(MAX_FRONT)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", bg.front.display()))?;
    Ok(bg
        .slots
        .iter()
        .find(|(s, _)| bg.front_text(s) == text)
        .map(|(s, _)| s.clone()))
}

/// Make the front name `slot`: a new file renamed over the old one, then
/// flushed, so nginx reads one or the other, never half of one.
pub fn write_front(bg: &BlueGreen, slot: &str) -> Result<()> {
    let (dir, name) = front_dir(bg)?;
    let tmp = format!(".{name}.releasectl-tmp");
    // `CreateNew` replaces a leftover of a write killed before its rename.
    let mut f = dir.open_file(&tmp, Access::CreateNew)?.expect("created");
    f.write_all(bg.front_text(slot).as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", dir.shown(&tmp).display()))?;
    drop(f);
    dir.rename(&tmp, &name)?;
    dir.sync()
}

/// At boot (`recover --no-reload`, before the front starts): if the front
/// names a slot that does not run `live` (a switch interrupted after it
/// wrote the front, whose `current` was just put back), front the slot
/// that does. Only the file changes: the front reads it when it starts.
pub fn refront_at_boot(app: &App, bg: &BlueGreen, live: Option<&str>) -> Result<()> {
    let Some(live) = live else {
        return Ok(());
    };
    let fronted = fronted(bg)?;
    match running(app, bg, live, fronted.as_deref())? {
        Some(slot) if fronted.as_ref() != Some(&slot) => {
            log::warn(&format!(
                "{}: the front named {}; {slot} runs {live}: fronting {slot}",
                app.label(),
                fronted.as_deref().unwrap_or("no slot")
            ));
            write_front(bg, &slot)
        }
        _ => Ok(()),
    }
}

/// The slot that runs `live`: the fronted one if it does (after a forced
/// activation both may), else the first that does.
fn running(app: &App, bg: &BlueGreen, live: &str, fronted: Option<&str>) -> Result<Option<String>> {
    let mut first = None;
    for (slot, _) in &bg.slots {
        if app.root.slot_release(slot)?.as_deref() != Some(live) {
            continue;
        }
        if fronted == Some(slot.as_str()) {
            return Ok(Some(slot.clone()));
        }
        first = first.or(Some(slot.clone()));
    }
    Ok(first)
}

/// Front `slot` and reload the front's units (in order).
pub fn front(
    app: &App,
    bg: &BlueGreen,
    slot: &str,
    services: &mut dyn ServiceManager,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    write_front(bg, slot).map_err(|e| anyhow::anyhow!(e.one_line()))?;
    let timeout = app.config.services.timeout;
    for unit in &bg.front_units {
        let what = format!("{}: reload {unit} to front {slot}", app.label());
        notify::status(&what);
        log::info(&what);
        services.apply(unit, Action::Reload, timeout, cancel)?;
    }
    Ok(())
}

/// Which instance serves (`status`): the slot the front names, its port,
/// and the release its link names.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Serving {
    pub slot: String,
    pub port: u16,
    pub release: Option<String>,
}

/// [`Serving`] for a blue/green app; `None` for any other, or while the
/// front names no slot.
pub fn serving(app: &App) -> Result<Option<Serving>> {
    let Some(bg) = &app.config.bluegreen else {
        return Ok(None);
    };
    let Some(slot) = fronted(bg)? else {
        return Ok(None);
    };
    Ok(Some(Serving {
        port: bg.port(&slot).expect("a configured slot"),
        release: app.root.slot_release(&slot)?,
        slot,
    }))
}

/// How long after the front's reload the instance no longer fronted is
/// left alone before its connections are counted: a reload only signals
/// nginx, whose old workers go on accepting until the new ones run.
const SETTLE: Duration = Duration::from_secs(1);

/// How often the connections are counted while draining.
const POLL: Duration = Duration::from_millis(100);

/// Let the instance of `slot`, no longer fronted, finish what it serves:
/// the front's old workers keep sending it the requests they took before
/// the reload. Waits until no TCP connection to its port is open (after
/// [`SETTLE`]), or `drain` at most.
pub fn drain(app: &App, bg: &BlueGreen, slot: &str) {
    let port = bg.port(slot).expect("a configured slot");
    let what = format!(
        "{}: draining {} (port {port}, {}s at most)",
        app.label(),
        bg.instance(slot),
        bg.drain.as_secs_f64()
    );
    notify::status(&what);
    notify::extend_timeout(bg.drain + app.config.services.timeout);
    log::info(&what);
    let started = Instant::now();
    std::thread::sleep(SETTLE.min(bg.drain));
    loop {
        let open = match connections::established(port) {
            Ok(n) => n,
            Err(e) => {
                log::warn(&format!(
                    "{}: cannot count connections to port {port} ({e}); waiting the whole drain",
                    app.label()
                ));
                std::thread::sleep(bg.drain.saturating_sub(started.elapsed()));
                return;
            }
        };
        let waited = started.elapsed();
        if open == 0 {
            log::info(&format!(
                "{}: {} drained in {:.1}s",
                app.label(),
                bg.instance(slot),
                waited.as_secs_f64()
            ));
            return;
        }
        if waited >= bg.drain {
            log::warn(&format!(
                "{}: {open} connection ends on port {port} still open after {}s; stopping {} all the same",
                app.label(),
                bg.drain.as_secs_f64(),
                bg.instance(slot)
            ));
            return;
        }
        std::thread::sleep(POLL.min(bg.drain - waited));
    }
}

/// Stop the instance of `slot`, saying so; a failure is a warning (the
/// activation stands, and the next `recover` stops it).
pub fn retire(app: &App, bg: &BlueGreen, slot: &str, services: &mut dyn ServiceManager) {
    let unit = bg.instance(slot);
    log::info(&format!("{}: stop {unit}", app.label()));
    if let Err(e) = services.start_stop(&unit, false, app.config.services.timeout, &Cancel::never())
    {
        log::warn(&format!("{}: {e:#}", app.label()));
    }
}

/// After an interrupted activation was undone (`current` names `from`
/// again): front the slot that runs `from`, make sure its instance runs,
/// and stop the other. With no slot running `from` (the first activation
/// was interrupted), nothing is fronted and both instances are stopped.
pub fn restore(
    app: &App,
    bg: &BlueGreen,
    from: Option<&str>,
    services: &mut dyn ServiceManager,
) -> anyhow::Result<()> {
    let one_line = |e: Error| anyhow::anyhow!(e.one_line());
    let was_fronted = fronted(bg).map_err(one_line)?;
    let live = match from {
        Some(from) => running(app, bg, from, was_fronted.as_deref()).map_err(one_line)?,
        None => None,
    };
    if let (Some(from), None) = (from, &live) {
        // `current` names a release no slot runs (`activate --no-reload`,
        // or links changed by hand): stopping the instances would leave
        // nothing serving. They are left as they are.
        log::warn(&format!(
            "{}: no slot runs {from}; instances left as they are; run `releasectl activate --force {}:{from}` to start it in one",
            app.label(),
            app.name.as_deref().unwrap_or("APP"),
        ));
        return Ok(());
    }
    let never = Cancel::never();
    if let Some(live) = &live {
        let unit = bg.instance(live);
        log::info(&format!(
            "{}: start {unit} (serves {})",
            app.label(),
            from.unwrap_or("")
        ));
        // A running instance is left serving.
        services.start_stop(&unit, true, app.config.services.timeout, &never)?;
        if was_fronted.as_ref() != Some(live) {
            front(app, bg, live, services, &never)?;
        }
    }
    // Drain before any stop, also when the front was right already: a
    // switch killed just after it reloaded the front (during its own drain)
    // leaves old workers sending requests to the other instance a moment.
    for (slot, _) in &bg.slots {
        if Some(slot) != live.as_ref() {
            drain(app, bg, slot);
            retire(app, bg, slot, services);
        }
    }
    Ok(())
}
