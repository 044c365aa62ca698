//! `/etc/releasectl/<app>.toml`: parsed strictly (unknown keys, wrong types
//! and relative paths are errors that name the file, line and key), then
//! turned into a validated [`Config`] with every default filled in.
//!
//! The `config` layer also holds the value types of its tables ([`shared`],
//! [`stage`]) and [`app::App`], the app a command acts on: its name, its
//! opened root and its config. May import fs and the base modules only.

pub mod app;
pub mod shared;
pub mod stage;

use crate::config::shared::SharedPath;
use crate::config::stage::DedupMode;
use crate::error::{usage, Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The directory app configs live in unless `--config-dir` says otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/releasectl";

/// What is done to each configured unit after a swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Reload,
    Restart,
    TryRestart,
    ReloadOrRestart,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reload => "reload",
            Action::Restart => "restart",
            Action::TryRestart => "try-restart",
            Action::ReloadOrRestart => "reload-or-restart",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Services {
    pub units: Vec<String>,
    pub action: Action,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub command: Option<Vec<String>>,
    pub url: Option<String>,
    /// A cap on the attempts (outside the start period); `None`: as many
    /// as fit in `timeout`.
    pub retries: Option<u32>,
    /// The pause between attempts (fractions of a second allowed).
    pub interval: Duration,
    /// The bound on the whole gate: attempts go on until one passes (or
    /// `consecutive` in a row) or this much time has passed since it began.
    pub timeout: Duration,
    /// Texts the URL's answer must all contain, each in the body or in a
    /// header value, with `{release}` replaced by the release being
    /// checked: proves the new release answers, not a worker still running
    /// the old configuration. Several markers prove several things (the
    /// server configuration's header and the code's body). Empty: any 2xx.
    pub expect: Vec<String>,
    /// Passing attempts in a row needed (workers of a reloaded server are
    /// replaced one by one).
    pub consecutive: u32,
    /// Grace after the units acted: failed attempts within it do not count
    /// against `retries` (an app still starting up), a passing one does.
    pub start_period: Duration,
}

impl Health {
    pub fn is_configured(&self) -> bool {
        self.command.is_some() || self.url.is_some()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hooks {
    pub pre_activate: Vec<Vec<String>>,
    /// After the swap, before the units act: validates the new release's
    /// service configuration (`nginx -t`) while a failure costs no reload.
    pub post_swap: Vec<Vec<String>>,
    pub post_activate: Vec<Vec<String>>,
    /// After an activation failed and was rolled back (or aborted, or its
    /// rollback failed): to notify or page. Their own failure is logged and
    /// changes nothing (see `Transaction::on_failure`).
    pub on_failure: Vec<Vec<String>>,
    /// The bound on each hook; a hook still running then is killed.
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks {
            pre_activate: Vec::new(),
            post_swap: Vec::new(),
            post_activate: Vec::new(),
            on_failure: Vec::new(),
            timeout: Duration::from_secs(3600),
        }
    }
}

/// A validated app configuration. `--root` mode uses [`Config::ad_hoc`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub root: PathBuf,
    /// How many good releases `prune` keeps by default.
    pub keep: usize,
    /// `[prune] keep`: prune to this many good releases after every
    /// committed activation (`None`: only when `prune` is run).
    pub auto_prune: Option<usize>,
    /// Check the release against its manifest before every activation.
    pub verify: bool,
    pub services: Services,
    pub health: Health,
    pub hooks: Hooks,
    /// Paths every release links into `ROOT/shared/` (`[shared]`).
    pub shared: Vec<SharedPath>,
    /// `[shared] owner` / `mode`: given to the shared directories
    /// releasectl creates or seeds.
    pub shared_owner: shared::Ownership,
    /// Which archive signatures `stage` accepts (`[stage]`).
    pub signing: crate::config::stage::Policy,
    /// How `stage` shares unchanged files with the current release (`[stage] dedup`).
    pub dedup: DedupMode,
    /// `[bluegreen]`: two instances of a template unit, switched behind a
    /// front (`None`: the units are acted on in place).
    pub bluegreen: Option<BlueGreen>,
}

/// Blue/green overlap: the new release starts in the idle slot's instance
/// of `unit`, is checked on that slot's port, and only then does `front`
/// name that port; the old instance is stopped after the commit.
#[derive(Debug, Clone, PartialEq)]
pub struct BlueGreen {
    /// A template, `app@.service`; its instances are the slot names.
    pub unit: String,
    /// The two slots: name and the port its instance listens on.
    pub slots: [(String, u16); 2],
    /// The file the front reads (an nginx upstream include), absolute, in
    /// a directory only root may write.
    pub front: PathBuf,
    /// What `front` says, `{port}` being the fronted slot's port.
    pub front_line: String,
    /// Reloaded after `front` changed, in order (nginx).
    pub front_units: Vec<String>,
    /// How long the old instance keeps running after the switch, to finish
    /// what it was serving.
    pub drain: Duration,
}

impl BlueGreen {
    /// The unit of slot `slot`: `app@blue.service`.
    pub fn instance(&self, slot: &str) -> String {
        self.unit.replacen("@.", &format!("@{slot}."), 1)
    }

    pub fn port(&self, slot: &str) -> Option<u16> {
        self.slots.iter().find(|(s, _)| s == slot).map(|(_, p)| *p)
    }

    /// The front's text when `slot` is fronted.
    pub fn front_text(&self, slot: &str) -> String {
        let port = self.port(slot).expect("a configured slot");
        format!("{}\n", self.front_line.replace("{port}", &port.to_string()))
    }
}

impl Config {
    /// The configuration of `--root DIR`: no units, no health check, no hooks.
    pub fn ad_hoc(root: PathBuf) -> Config {
        Config {
            root,
            keep: 5,
            auto_prune: None,
            verify: false,
            services: Services {
                units: Vec::new(),
                action: Action::Reload,
                timeout: Duration::from_secs(90),
            },
            health: Health {
                command: None,
                url: None,
                retries: None,
                // One attempt a second: nothing for any server to answer,
                // and an old config without `interval` behaves as before.
                // A gate that must see a reload land sets a shorter one.
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(30),
                expect: Vec::new(),
                consecutive: 1,
                start_period: Duration::ZERO,
            },
            hooks: Hooks::default(),
            shared: Vec::new(),
            shared_owner: shared::Ownership::default(),
            signing: crate::config::stage::Policy::default(),
            dedup: DedupMode::default(),
            bluegreen: None,
        }
    }

    /// Read and validate `<dir>/<app>.toml`.
    pub fn load(dir: &Path, app: &str) -> Result<Config> {
        let path = dir.join(format!("{app}.toml"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let known = list_apps(dir).unwrap_or_default();
                let hint = if known.is_empty() {
                    String::new()
                } else {
                    format!(" (configured apps: {})", known.join(", "))
                };
                return Err(usage(format!(
                    "unknown app \"{app}\": {} does not exist{hint}",
                    path.display()
                )));
            }
            // Not UTF-8 is the file's fault; permissions and I/O are the machine's.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(usage(format!("cannot read {}: {e}", path.display())))
            }
            Err(e) => return Err(Error::op_ctx(e, format_args!("reading {}", path.display()))),
        };
        Config::parse(&path, &text)
    }

    /// Parse config text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let key = e.span().and_then(|s| key_at(text, s.start));
            let loc = match (line, key) {
                (Some(l), Some(k)) => format!("{}:{l}: key `{k}`", path.display()),
                (Some(l), None) => format!("{}:{l}", path.display()),
                _ => path.display().to_string(),
            };
            usage(format!("{loc}: {}", e.message().trim()))
        })?;
        raw.validate(path, text)
    }
}

/// The apps configured in `dir`, sorted.
pub fn list_apps(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut apps = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(app) = name.to_str().and_then(|n| n.strip_suffix(".toml")) {
            if crate::release_id::validate_app(app).is_ok() {
                apps.push(app.to_string());
            }
        }
    }
    apps.sort();
    Ok(apps)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    root: Spanned<PathBuf>,
    keep: Option<usize>,
    verify: Option<bool>,
    services: Option<RawServices>,
    health: Option<RawHealth>,
    hooks: Option<RawHooks>,
    shared: Option<RawShared>,
    stage: Option<RawStage>,
    prune: Option<RawPrune>,
    bluegreen: Option<RawBlueGreen>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlueGreen {
    unit: Spanned<String>,
    slots: Spanned<std::collections::BTreeMap<String, u16>>,
    front: Spanned<PathBuf>,
    front_line: Option<Spanned<String>>,
    front_units: Option<Vec<String>>,
    drain: Option<Spanned<Seconds>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrune {
    keep: Spanned<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    allowed_signers: Option<Spanned<PathBuf>>,
    signer_identity: Option<Spanned<String>>,
    require_signature: Option<Spanned<bool>>,
    dedup: Option<DedupMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShared {
    dirs: Option<Vec<Spanned<String>>>,
    files: Option<Vec<Spanned<String>>>,
    owner: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServices {
    units: Option<Vec<String>>,
    action: Option<Action>,
    timeout: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    command: Option<Spanned<Vec<String>>>,
    url: Option<Spanned<String>>,
    retries: Option<u32>,
    interval: Option<Spanned<Seconds>>,
    timeout: Option<Spanned<Seconds>>,
    expect: Option<Spanned<OneOrMany>>,
    consecutive: Option<Spanned<u32>>,
    start_period: Option<Spanned<Seconds>>,
}

/// `expect = "marker"` or `expect = ["marker", "marker"]`.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A number of seconds as written: an integer (what older configs have)
/// or a float (`0.1`). Range checks happen in [`fractional_seconds`].
struct Seconds(f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Seconds, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of seconds (such as 1 or 0.5)")
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Seconds, E> {
                Ok(Seconds(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    pre_activate: Option<Vec<Spanned<Vec<String>>>>,
    post_swap: Option<Vec<Spanned<Vec<String>>>>,
    post_activate: Option<Vec<Spanned<Vec<String>>>>,
    on_failure: Option<Vec<Spanned<Vec<String>>>>,
    timeout: Option<Spanned<u64>>,
}

impl RawConfig {
    fn validate(self, path: &Path, text: &str) -> Result<Config> {
        let err = |span: std::ops::Range<usize>, key: &str, msg: &str| {
            usage(format!(
                "{}:{}: key `{key}`: {msg}",
                path.display(),
                line_of(text, span.start)
            ))
        };
        if !self.root.get_ref().is_absolute() {
            return Err(err(self.root.span(), "root", "must be an absolute path"));
        }
        let mut cfg = Config::ad_hoc(self.root.into_inner());
        if let Some(keep) = self.keep {
            cfg.keep = keep;
        }
        if let Some(p) = self.prune {
            if self.keep.is_some() {
                return Err(err(
                    p.keep.span(),
                    "prune.keep",
                    "the top-level `keep` says the same: keep one of them ([prune] keep also prunes after every activation)",
                ));
            }
            cfg.keep = p.keep.into_inner();
            cfg.auto_prune = Some(cfg.keep);
        }
        cfg.verify = self.verify.unwrap_or(false);
        if let Some(s) = self.services {
            validate_services(s, &mut cfg.services, path, &err)?;
        }
        if let Some(h) = self.health {
            validate_health(h, &mut cfg.health, &err)?;
        }
        if let Some(hooks) = self.hooks {
            validate_hooks(hooks, &mut cfg.hooks, &err)?;
        }
        if let Some(dedup) = self.stage.as_ref().and_then(|s| s.dedup) {
            cfg.dedup = dedup;
        }
        if let Some(sh) = self.shared {
            validate_shared(sh, &mut cfg, &err)?;
        }
        if let Some(st) = self.stage {
            validate_stage(st, &mut cfg.signing, &err)?;
        }
        if let Some(bg) = self.bluegreen {
            cfg.bluegreen = Some(validate_bluegreen(bg, &cfg.health, &err)?);
        }
        Ok(cfg)
    }
}

/// `[services]`.
fn validate_services(
    s: RawServices,
    out: &mut Services,
    path: &Path,
    err: &impl Fn(std::ops::Range<usize>, &str, &str) -> Error,
) -> Result<()> {
    for unit in s.units.iter().flatten() {
        if unit.is_empty() || unit.contains('/') || unit.chars().any(char::is_whitespace) {
            return Err(usage(format!(
                "{}: key `services.units`: invalid unit name \"{}\"",
                path.display(),
                unit.escape_debug()
            )));
        }
    }
    out.units = s.units.unwrap_or_default();
    out.action = s.action.unwrap_or(Action::Reload);
    if let Some(t) = s.timeout {
        out.timeout = seconds(t, "services.timeout", &err)?;
    }
    Ok(())
}

/// `[health]`.
fn validate_health(
    h: RawHealth,
    out: &mut Health,
    err: &impl Fn(std::ops::Range<usize>, &str, &str) -> Error,
) -> Result<()> {
    if let Some(cmd) = h.command {
        check_argv(&cmd, "health.command", &err)?;
        out.command = Some(cmd.into_inner());
    }
    if let Some(url) = h.url {
        if !url.get_ref().starts_with("http://") {
            return Err(err(
                url.span(),
                "health.url",
                "only http:// URLs are supported",
            ));
        }
        out.url = Some(url.into_inner());
    }
    out.retries = h.retries.map(|n| n.max(1));
    if let Some(expect) = h.expect {
        out.expect = check_expect(expect, out.url.is_some(), &err)?;
    }
    if let Some(n) = h.consecutive {
        let cap = out.retries.unwrap_or(u32::MAX);
        if *n.get_ref() == 0 || *n.get_ref() > cap {
            let msg = match out.retries {
                Some(r) => format!("must be between 1 and retries ({r})"),
                None => "must be at least 1".to_string(),
            };
            return Err(err(n.span(), "health.consecutive", &msg));
        }
        out.consecutive = n.into_inner();
    }
    if let Some(t) = h.interval {
        out.interval = fractional_seconds(t, "health.interval", false, &err)?;
    }
    if let Some(t) = h.timeout {
        out.timeout = fractional_seconds(t, "health.timeout", true, &err)?;
    }
    if let Some(t) = h.start_period {
        let span = t.span();
        out.start_period = fractional_seconds(t, "health.start_period", false, &err)?;
        if out.start_period >= out.timeout {
            return Err(err(
                span,
                "health.start_period",
                &format!(
                    "must be shorter than health.timeout ({}s), which bounds it",
                    out.timeout.as_secs_f64()
                ),
            ));
        }
    }
    Ok(())
}

/// `[hooks]`: each list an argv per hook, the timeout their bound.
fn validate_hooks(
    hooks: RawHooks,
    out: &mut Hooks,
    err: &impl Fn(std::ops::Range<usize>, &str, &str) -> Error,
) -> Result<()> {
    if let Some(t) = hooks.timeout {
        out.timeout = seconds(t, "hooks.timeout", &err)?;
    }
    for (list, key, out) in [
        (
            hooks.pre_activate,
            "hooks.pre_activate",
            &mut out.pre_activate,
        ),
        (hooks.post_swap, "hooks.post_swap", &mut out.post_swap),
        (
            hooks.post_activate,
            "hooks.post_activate",
            &mut out.post_activate,
        ),
        (hooks.on_failure, "hooks.on_failure", &mut out.on_failure),
    ] {
        for argv in list.unwrap_or_default() {
            check_argv(&argv, key, &err)?;
            out.push(argv.into_inner());
        }
    }
    Ok(())
}

/// `[shared]`: the paths (each valid, none inside another) and whom the
/// directories releasectl makes are given to.
fn validate_shared(
    sh: RawShared,
    cfg: &mut Config,
    err: &impl Fn(std::ops::Range<usize>, &str, &str) -> Error,
) -> Result<()> {
    if let Some(o) = &sh.owner {
        let found = shared::resolve_owner(o.get_ref())
            .map_err(|why| err(o.span(), "shared.owner", &why))?;
        cfg.shared_owner.owner = Some(found);
    }
    if let Some(m) = &sh.mode {
        let mode =
            shared::parse_mode(m.get_ref()).map_err(|why| err(m.span(), "shared.mode", &why))?;
        cfg.shared_owner.mode = Some(mode);
    }
    let mut spans = Vec::new();
    for (list, kind, key) in [
        (sh.dirs, shared::Kind::Dir, "shared.dirs"),
        (sh.files, shared::Kind::File, "shared.files"),
    ] {
        for p in list.unwrap_or_default() {
            let sp = SharedPath::new(p.get_ref(), kind, key).map_err(|why| {
                err(
                    p.span(),
                    key,
                    &format!("\"{}\" {why}", p.get_ref().escape_debug()),
                )
            })?;
            cfg.shared.push(sp);
            spans.push(p.span());
        }
    }
    if let Some((i, why)) = shared::conflict(&cfg.shared) {
        let p = &cfg.shared[i];
        return Err(err(
            spans[i].clone(),
            &p.origin,
            &format!("\"{}\" {why}", p.path.escape_debug()),
        ));
    }
    Ok(())
}

/// `[stage]`: which signatures `stage` accepts.
fn validate_stage(
    st: RawStage,
    p: &mut crate::config::stage::Policy,
    err: &impl Fn(std::ops::Range<usize>, &str, &str) -> Error,
) -> Result<()> {
    if let Some(a) = st.allowed_signers {
        if !a.get_ref().is_absolute() {
            return Err(err(
                a.span(),
                "stage.allowed_signers",
                "must be an absolute path",
            ));
        }
        p.allowed_signers = Some(a.into_inner());
    }
    if let Some(id) = st.signer_identity {
        let v = id.get_ref();
        if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
            return Err(err(
                id.span(),
                "stage.signer_identity",
                "1-256 bytes, no control characters",
            ));
        }
        p.identity = Some(id.into_inner());
    }
    if let Some(r) = st.require_signature {
        if *r.get_ref() && p.allowed_signers.is_none() {
            return Err(err(
                r.span(),
                "stage.require_signature",
                "needs stage.allowed_signers (the keys that may sign)",
            ));
        }
        p.required = r.into_inner();
    }
    Ok(())
}

/// `[bluegreen]`: a template unit, two slots with distinct ports, a front
/// file at an absolute path, and a health URL that names the slot's port
/// (the new instance is checked on its own port before it is fronted).
fn validate_bluegreen(
    bg: RawBlueGreen,
    health: &Health,
    err: &impl Fn(std::ops::Range<usize>, &str, &str) -> Error,
) -> Result<BlueGreen> {
    let unit = bg.unit.get_ref();
    let bad_unit = |u: &str| u.is_empty() || u.contains('/') || u.chars().any(char::is_whitespace);
    if !unit.ends_with("@.service") || unit.len() <= "@.service".len() || bad_unit(unit) {
        return Err(err(
            bg.unit.span(),
            "bluegreen.unit",
            "must be a template such as \"app@.service\"",
        ));
    }
    let span = bg.slots.span();
    let slots: Vec<(String, u16)> = bg.slots.into_inner().into_iter().collect();
    let named = |s: &str| {
        !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if slots.len() != 2
        || slots[0].1 == slots[1].1
        || slots.iter().any(|(s, p)| !named(s) || *p == 0)
    {
        return Err(err(span, "bluegreen.slots", "two slots, each a name (letters, digits, - and _) and a port of its own, such as { blue = 8001, green = 8002 }"));
    }
    if !plain_file_path(bg.front.get_ref()) {
        return Err(err(
            bg.front.span(),
            "bluegreen.front",
            "must be the absolute path of a file, without . or .. (root checks each directory on the way)",
        ));
    }
    let front_line = match bg.front_line {
        Some(l) if !l.get_ref().contains("{port}") || l.get_ref().contains('\n') => {
            return Err(err(
                l.span(),
                "bluegreen.front_line",
                "one line that contains {port}",
            ))
        }
        Some(l) => l.into_inner(),
        None => "server 127.0.0.1:{port};".to_string(),
    };
    if !health.url.as_deref().is_some_and(|u| u.contains("{port}")) {
        return Err(err(span, "bluegreen", "needs [health] url with {port}: the new instance is checked on its own port before the front names it"));
    }
    if let Some(u) = bg.front_units.iter().flatten().find(|u| bad_unit(u)) {
        return Err(err(
            span,
            "bluegreen.front_units",
            &format!("invalid unit name \"{}\"", u.escape_debug()),
        ));
    }
    let drain = match bg.drain {
        Some(d) => {
            let span = d.span();
            let drain = fractional_seconds(d, "bluegreen.drain", false, err)?;
            // A reload of nginx only signals it: its old workers send
            // requests to the old instance a moment after the reload
            // returns, and an instance stopped at once fails them (502).
            if drain < MIN_DRAIN {
                return Err(err(
                    span,
                    "bluegreen.drain",
                    "must be at least 1 second: the front's old workers still send requests to the old instance just after its reload",
                ));
            }
            drain
        }
        None => Duration::from_secs(5),
    };
    Ok(BlueGreen {
        unit: unit.clone(),
        slots: [slots[0].clone(), slots[1].clone()],
        front: bg.front.into_inner(),
        front_line,
        front_units: bg.front_units.unwrap_or_default(),
        drain,
    })
}

/// An absolute path of a file written the plain way: `/`, then names
/// only (no `.`, `..`, `//` or trailing `/`), so that the directories root
/// checks on the way to it are the ones nginx goes through.
fn plain_file_path(p: &Path) -> bool {
    use std::path::Component;
    let mut parts = p.components();
    let plain: PathBuf = p.components().collect();
    parts.next() == Some(Component::RootDir)
        && parts.clone().count() > 0
        && parts.all(|c| matches!(c, Component::Normal(_)))
        && plain.as_os_str() == p.as_os_str()
}

/// The longest timeout or interval accepted, in seconds (one day). Larger
/// values are refused at load: they mean a typo, and a deadline that far
/// away must never overflow the clock arithmetic mid-activation.
pub const MAX_SECONDS: u64 = 86_400;

fn seconds(
    value: Spanned<u64>,
    key: &str,
    err: &impl Fn(std::ops::Range<usize>, &str, &str) -> Error,
) -> Result<Duration> {
    if *value.get_ref() > MAX_SECONDS {
        return Err(err(
            value.span(),
            key,
            &format!(
                "{} seconds is more than the maximum of {MAX_SECONDS}",
                value.get_ref()
            ),
        ));
    }
    Ok(Duration::from_secs(value.into_inner()))
}

/// `[health] interval`, `timeout`, `start_period`: finite, not negative,
/// at most [`MAX_SECONDS`], and above zero where zero would mean no time at
/// all (`timeout`: a gate that never looks).
/// The shortest `bluegreen.drain`.
const MIN_DRAIN: Duration = Duration::from_secs(1);

fn fractional_seconds(
    value: Spanned<Seconds>,
    key: &str,
    positive: bool,
    err: &impl Fn(std::ops::Range<usize>, &str, &str) -> Error,
) -> Result<Duration> {
    let s = value.get_ref().0;
    let low_ok = if positive { s > 0.0 } else { s >= 0.0 };
    // NaN fails both comparisons, so it is refused here too.
    if !(low_ok && s <= MAX_SECONDS as f64) {
        let low = if positive { "more than 0" } else { "0 or more" };
        return Err(err(
            value.span(),
            key,
            &format!("{s} is not a number of seconds {low} and at most {MAX_SECONDS}"),
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

/// `expect`: needs the URL it is looked for in; no marker may be empty (an
/// empty one is found in every answer), nor the list.
fn check_expect(
    expect: Spanned<OneOrMany>,
    has_url: bool,
    err: &impl Fn(std::ops::Range<usize>, &str, &str) -> Error,
) -> Result<Vec<String>> {
    let span = expect.span();
    if !has_url {
        return Err(err(
            span,
            "health.expect",
            "needs health.url (it is looked for in the URL's answer)",
        ));
    }
    let markers = expect.into_inner().into_vec();
    if markers.is_empty() || markers.iter().any(String::is_empty) {
        return Err(err(span, "health.expect", "must not be empty"));
    }
    Ok(markers)
}

/// A command is an argv list whose program is an absolute path: hooks run as
/// root without a shell, so nothing is looked up in `$PATH`.
fn check_argv(
    argv: &Spanned<Vec<String>>,
    key: &str,
    err: &dyn Fn(std::ops::Range<usize>, &str, &str) -> crate::error::Error,
) -> Result<()> {
    match argv.get_ref().first() {
        None => Err(err(argv.span(), key, "command must not be empty")),
        Some(prog) if !prog.starts_with('/') => Err(err(
            argv.span(),
            key,
            &format!(
                "program \"{}\" must be an absolute path",
                prog.escape_debug()
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Best effort: the dotted key whose value or name sits at `offset`, found
/// from the nearest `[table]` header above and the `key =` on that line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))?;
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("/etc/releasectl/web.toml"), text)
    }

    #[test]
    fn full_example_parses() {
        let cfg = parse(
            r#"
root = "/srv/web"
keep = 3
[services]
units = ["web.service"]
action = "reload-or-restart"
timeout = 10
[health]
command = ["/usr/bin/curl", "-fsS", "http://127.0.0.1:8080/healthz"]
url = "http://127.0.0.1:8080/"
retries = 2
interval = 0
timeout = 5
[hooks]
pre_activate = [["/usr/local/bin/warm-cache"]]
post_activate = []
on_failure = [["/usr/local/bin/page", "web"]]
"#,
        )
        .unwrap();
        assert_eq!(cfg.hooks.on_failure, [["/usr/local/bin/page", "web"]]);
        assert_eq!(cfg.keep, 3);
        assert_eq!(cfg.services.action, Action::ReloadOrRestart);
        assert_eq!(cfg.health.retries, Some(2));
        assert_eq!(cfg.hooks.pre_activate.len(), 1);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse("root = \"/srv/web\"\n[services]\nunits = []\nactoin = \"reload\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/releasectl/web.toml:4: key `services.actoin`"),
            "{e}"
        );
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = parse("root = \"/srv/web\"\nkeep = \"five\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/releasectl/web.toml:2: key `keep`"),
            "{e}"
        );
    }

    #[test]
    fn health_gate_needs_a_url_and_a_sane_streak() {
        let e =
            parse("root = \"/srv\"\n[health]\ncommand = [\"/bin/true\"]\nexpect = \"{release}\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains(":4: key `health.expect`: needs health.url"),
            "{e}"
        );
        let e =
            parse("root = \"/srv\"\n[health]\nurl = \"http://x/\"\nretries = 2\nconsecutive = 3\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("key `health.consecutive`: must be between 1 and retries (2)"),
            "{e}"
        );
        let c = parse("root = \"/srv\"\n[health]\nurl = \"http://x/\"\nexpect = \"{release}\"\nconsecutive = 2\n")
            .unwrap();
        assert_eq!(c.health.expect, ["{release}"]);
        assert_eq!(c.health.consecutive, 2);
    }

    #[test]
    fn health_times_take_fractions_and_old_integers() {
        let c = parse(
            "root = \"/srv\"\n[health]\nurl = \"http://x/\"\ninterval = 0.1\ntimeout = 2.5\n",
        )
        .unwrap();
        assert_eq!(c.health.interval, Duration::from_millis(100));
        assert_eq!(c.health.timeout, Duration::from_millis(2500));
        assert_eq!(c.health.retries, None);
        let c = parse("root = \"/srv\"\n[health]\nurl = \"http://x/\"\ninterval = 0\ntimeout = 20\nretries = 3\n")
            .unwrap();
        assert_eq!(c.health.interval, Duration::ZERO);
        assert_eq!(c.health.timeout, Duration::from_secs(20));
        assert_eq!(c.health.retries, Some(3));
        for (body, needle) in [
            (
                "timeout = 0",
                ":4: key `health.timeout`: 0 is not a number of seconds more than 0",
            ),
            ("timeout = -1.5", ":4: key `health.timeout`: -1.5 is not"),
            ("timeout = nan", ":4: key `health.timeout`: NaN is not"),
            ("timeout = inf", ":4: key `health.timeout`: inf is not"),
            (
                "interval = -0.1",
                ":4: key `health.interval`: -0.1 is not a number of seconds 0 or more",
            ),
            (
                "interval = 86400.5",
                ":4: key `health.interval`: 86400.5 is not",
            ),
            ("interval = \"1s\"", ":4: key `health.interval`"),
        ] {
            let e = parse(&format!(
                "root = \"/srv\"\n[health]\nurl = \"http://x/\"\n{body}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn expect_is_one_marker_or_a_list() {
        let c = parse(
            "root = \"/srv\"\n[health]\nurl = \"http://x/\"\nexpect = [\"a {release}\", \"b\"]\n",
        )
        .unwrap();
        assert_eq!(c.health.expect, ["a {release}", "b"]);
        for body in ["expect = []", "expect = [\"a\", \"\"]", "expect = \"\""] {
            let e = parse(&format!(
                "root = \"/srv\"\n[health]\nurl = \"http://x/\"\n{body}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains(":4: key `health.expect`: must not be empty"),
                "{body}: {e}"
            );
        }
        let e = parse("root = \"/srv\"\n[health]\nurl = \"http://x/\"\nexpect = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a string or an array of strings"), "{e}");
    }

    #[test]
    fn start_period_is_bounded_by_the_timeout() {
        let e = parse(
            "root = \"/srv\"\n[health]\nurl = \"http://x/\"\ntimeout = 10\nstart_period = 10\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(":5: key `health.start_period`: must be shorter than health.timeout (10s)"),
            "{e}"
        );
        let c = parse(
            "root = \"/srv\"\n[health]\nurl = \"http://x/\"\ntimeout = 10\nstart_period = 4\n",
        )
        .unwrap();
        assert_eq!(c.health.start_period, Duration::from_secs(4));
    }

    #[test]
    fn relative_root_refused() {
        let e = parse("root = \"srv/web\"\n").unwrap_err().to_string();
        assert!(
            e.contains(":1: key `root`: must be an absolute path"),
            "{e}"
        );
    }

    #[test]
    fn relative_hook_refused() {
        let e = parse("root = \"/srv\"\n[hooks]\npre_activate = [[\"warm\"]]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":3: key `hooks.pre_activate`"), "{e}");
    }

    #[test]
    fn shared_paths_are_validated_with_their_line() {
        let c = parse("root = \"/srv\"\n[shared]\ndirs = [\"storage\", \"public/uploads\"]\nfiles = [\".env\"]\n")
            .unwrap();
        let paths: Vec<&str> = c.shared.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["storage", "public/uploads", ".env"]);
        for (body, needle) in [
            (
                "dirs = [\"../x\"]",
                ":3: key `shared.dirs`: \"../x\" contains `..`",
            ),
            (
                "files = [\"/etc/passwd\"]",
                ":3: key `shared.files`: \"/etc/passwd\" is absolute",
            ),
            (
                "dirs = [\".releasectl\"]",
                ":3: key `shared.dirs`: \".releasectl\" lies in",
            ),
            (
                "dirs = [\"a\"]\nfiles = [\"a/b\"]",
                ":4: key `shared.files`: \"a/b\" nests with",
            ),
            (
                "dirs = [\"a\", \"a\"]",
                ":3: key `shared.dirs`: \"a\" is already a shared path",
            ),
            ("links = []", ":3: key `shared.links`"),
        ] {
            let e = parse(&format!("root = \"/srv\"\n[shared]\n{body}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn invalid_toml_names_line() {
        let e = parse("root = \"/srv\"\nkeep = = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/releasectl/web.toml:2"), "{e}");
    }

    const BLUEGREEN: &str = "root = \"/srv/web\"\n[health]\nurl = \"http://127.0.0.1:{port}/\"\n\
        [bluegreen]\nunit = \"web@.service\"\nslots = { blue = 8001, green = 8002 }\n\
        front = \"/var/lib/releasectl/fronts/web.conf\"\nfront_units = [\"nginx.service\"]\n";

    #[test]
    fn bluegreen_is_parsed_with_its_defaults() {
        let bg = parse(BLUEGREEN).unwrap().bluegreen.expect("[bluegreen]");
        assert_eq!(bg.instance("green"), "web@green.service");
        assert_eq!(bg.port("blue"), Some(8001));
        assert_eq!(bg.front_text("green"), "server 127.0.0.1:8002;\n");
        assert_eq!(bg.drain, Duration::from_secs(5));
        assert_eq!(bg.front_units, ["nginx.service"]);
    }

    #[test]
    fn bad_bluegreen_is_refused_naming_the_key() {
        for (from, to, key) in [
            ("web@.service", "web.service", "bluegreen.unit"),
            ("green = 8002", "green = 8001", "bluegreen.slots"),
            (
                "{ blue = 8001, green = 8002 }",
                "{ blue = 8001 }",
                "bluegreen.slots",
            ),
            (
                "\"/var/lib/releasectl/fronts/web.conf\"",
                "\"fronts/web.conf\"",
                "bluegreen.front",
            ),
            (
                "\"/var/lib/releasectl/fronts/web.conf\"",
                "\"/\"",
                "bluegreen.front",
            ),
            (
                "/var/lib/releasectl/fronts/web.conf",
                "/var/lib/releasectl/../../tmp/web.conf",
                "bluegreen.front",
            ),
            (
                "/var/lib/releasectl/fronts/web.conf",
                "/var/lib/releasectl/fronts/./web.conf",
                "bluegreen.front",
            ),
            (
                "/var/lib/releasectl/fronts/web.conf",
                "/var/lib/releasectl/fronts/",
                "bluegreen.front",
            ),
            (
                "http://127.0.0.1:{port}/",
                "http://127.0.0.1:8001/",
                "bluegreen",
            ),
        ] {
            assert!(BLUEGREEN.contains(from), "{from}");
            let e = parse(&BLUEGREEN.replace(from, to)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(
                e.to_string().contains(&format!("key `{key}`")),
                "{key}: {e}"
            );
        }
        for units in ["[\"\"]", "[\"../x.service\"]", "[\"nginx .service\"]"] {
            let e = parse(&BLUEGREEN.replace("[\"nginx.service\"]", units)).unwrap_err();
            assert!(e.to_string().contains("key `bluegreen.front_units`"), "{e}");
        }
        let e = parse(&BLUEGREEN.replace("web@.service", "web x@.service")).unwrap_err();
        assert!(e.to_string().contains("key `bluegreen.unit`"), "{e}");
        let e = parse(&format!(
            "{BLUEGREEN}front_line = \"server 127.0.0.1:8001;\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("key `bluegreen.front_line`"), "{e}");
        for drain in ["0", "0.5", "-1"] {
            let e = parse(&format!("{BLUEGREEN}drain = {drain}\n")).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(
                e.to_string().contains("key `bluegreen.drain`"),
                "{drain}: {e}"
            );
        }
        let ok = parse(&format!("{BLUEGREEN}drain = 1.5\n")).unwrap();
        assert_eq!(ok.bluegreen.unwrap().drain, Duration::from_millis(1500));
    }
}
