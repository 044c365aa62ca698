//! The `[shared]` table's values: shared paths (`storage/`, `log/`,
//! `.env`: see [`crate::staging::shared`] for what stage does with them),
//! checked for syntax and conflicts, and the owner and mode shared
//! directories are given.

use crate::error::{usage, Result};
use crate::fs::root::{CURRENT, RELEASES, STATE_DIR};

/// The directory below ROOT that holds shared paths.
pub const SHARED: &str = "shared";

/// Longest shared path accepted, in bytes (and NAME_MAX per component).
const MAX_LEN: usize = 1024;
const MAX_NAME: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

impl Kind {
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File => "file",
        }
    }
}

/// One validated shared path, and where it was asked for (a config key or
/// a flag), so that errors name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPath {
    pub path: String,
    pub parts: Vec<String>,
    pub kind: Kind,
    pub origin: String,
}

impl SharedPath {
    /// Check the syntax of `path`; the error says why (the caller names
    /// the key or flag).
    pub fn new(path: &str, kind: Kind, origin: &str) -> std::result::Result<SharedPath, String> {
        Ok(SharedPath {
            path: path.to_string(),
            parts: parse(path)?,
            kind,
            origin: origin.to_string(),
        })
    }

    /// `../../shared/P`, seen from where the link lies in a release: up
    /// to the release, up to `releases/`, up to ROOT, then down.
    pub fn link_target(&self) -> String {
        format!(
            "{}{SHARED}/{}",
            "../".repeat(self.parts.len() + 1),
            self.path
        )
    }

    pub(crate) fn shown(&self) -> String {
        format!("{} {}", self.origin, self.path.escape_debug())
    }

    pub(crate) fn key(&self) -> Vec<&[u8]> {
        self.parts.iter().map(|p| p.as_bytes()).collect()
    }
}

/// Like a release id, a shared path must name something inside the
/// release: relative, only plain components (no `.`, `..`, empty ones or
/// NUL), and not releasectl's own names at the top, which a link would
/// make point into ROOT's state.
fn parse(path: &str) -> std::result::Result<Vec<String>, String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if path.starts_with('/') {
        return Err("is absolute (shared paths are relative to the release)".into());
    }
    if path.len() > MAX_LEN {
        return Err(format!("is longer than {MAX_LEN} bytes"));
    }
    let parts: Vec<String> = path.split('/').map(str::to_string).collect();
    for part in &parts {
        match part.as_str() {
            "" => {
                return Err(
                    "has an empty component (write it without `//` or a trailing `/`)".into(),
                )
            }
            "." => return Err("contains `.`".into()),
            ".." => return Err("contains `..`".into()),
            p if p.len() > MAX_NAME => {
                return Err(format!("has a component longer than {MAX_NAME} bytes"))
            }
            _ => {}
        }
    }
    if [STATE_DIR, RELEASES, CURRENT, SHARED].contains(&parts[0].as_str()) {
        return Err(format!("lies in `{}`, which releasectl owns", parts[0]));
    }
    Ok(parts)
}

/// `[shared] owner` / `mode`: what the shared directories releasectl
/// creates or seeds are given (`None`: as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    pub owner: Option<SharedOwner>,
    pub mode: Option<u32>,
}

/// A user, as `[shared] owner` named it, and its primary group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedOwner {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The user `spec` names: a name in /etc/passwd (read bounded; NSS
/// sources such as LDAP are not asked), or a numeric uid (its primary
/// group from /etc/passwd, else the gid equal to the uid).
pub fn resolve_owner(spec: &str) -> std::result::Result<SharedOwner, String> {
    let numeric = spec.parse::<u32>().ok();
    let found = crate::passwd::users()
        .into_iter()
        .find(|u| u.name == spec || numeric == Some(u.uid));
    match (found, numeric) {
        (Some(u), _) => Ok(SharedOwner {
            name: spec.to_string(),
            uid: u.uid,
            gid: u.gid,
        }),
        (None, Some(uid)) => Ok(SharedOwner {
            name: spec.to_string(),
            uid,
            gid: uid,
        }),
        (None, None) => Err(format!(
            "\"{}\" is not a user in /etc/passwd (write a name there or a numeric uid)",
            spec.escape_debug()
        )),
    }
}

/// `"0770"`-style: an octal string of 3 or 4 digits, at most 07777.
pub fn parse_mode(text: &str) -> std::result::Result<u32, String> {
    let ok = (3..=4).contains(&text.len()) && text.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match ok.then(|| u32::from_str_radix(text, 8).ok()).flatten() {
        Some(mode) => Ok(mode),
        None => Err(format!(
            "\"{}\" is not an octal mode (write it as a string such as \"0770\")",
            text.escape_debug()
        )),
    }
}

/// The first path of `paths` that repeats or lies inside another one, as
/// (its index, why).
pub fn conflict(paths: &[SharedPath]) -> Option<(usize, String)> {
    for (i, p) in paths.iter().enumerate() {
        for q in &paths[..i] {
            if p.parts == q.parts {
                return Some((i, format!("is already a shared path ({})", q.shown())));
            }
            let (short, long) = if p.parts.len() < q.parts.len() {
                (p, q)
            } else {
                (q, p)
            };
            if long.parts.starts_with(&short.parts) {
                return Some((
                    i,
                    format!(
                        "nests with {} (a shared path cannot lie inside another)",
                        q.shown()
                    ),
                ));
            }
        }
    }
    None
}

/// The config's shared paths plus `--shared-dir` / `--shared-file`, checked
/// together (exit 2 naming the flag and the path).
pub fn combine(
    config: &[SharedPath],
    dirs: &[String],
    files: &[String],
) -> Result<Vec<SharedPath>> {
    let mut all = config.to_vec();
    for (list, kind, flag) in [
        (dirs, Kind::Dir, "--shared-dir"),
        (files, Kind::File, "--shared-file"),
    ] {
        for p in list {
            all.push(
                SharedPath::new(p, kind, flag)
                    .map_err(|why| usage(format!("{flag} {}: {why}", p.escape_debug())))?,
            );
        }
    }
    if let Some((i, why)) = conflict(&all) {
        return Err(usage(format!("{}: {why}", all[i].shown())));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> std::result::Result<Vec<String>, String> {
        parse(path)
    }

    #[test]
    fn paths_are_plain_and_relative() {
        assert_eq!(p("storage").unwrap(), ["storage"]);
        assert_eq!(p("public/uploads").unwrap(), ["public", "uploads"]);
        assert_eq!(p(".env").unwrap(), [".env"]);
        for bad in [
            "",
            "/etc",
            "..",
            "a/../b",
            "./a",
            "a/.",
            "a//b",
            "a/",
            ".releasectl",
            ".releasectl/x",
            "releases",
            "current",
            "shared/x",
            "a\0b",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
        assert!(p(&"x".repeat(256)).is_err());
        // Only the top is reserved.
        assert!(p("app/shared").is_ok());
    }

    #[test]
    fn duplicates_and_nesting_are_conflicts() {
        let sp = |s: &str, k| SharedPath::new(s, k, "shared.dirs").unwrap();
        let ok = [
            sp("storage", Kind::Dir),
            sp("public/uploads", Kind::Dir),
            sp(".env", Kind::File),
        ];
        assert!(conflict(&ok).is_none());
        let dup = [sp("storage", Kind::Dir), sp("storage", Kind::File)];
        assert_eq!(conflict(&dup).unwrap().0, 1);
        let nested = [sp("storage/logs", Kind::Dir), sp("storage", Kind::Dir)];
        assert!(conflict(&nested).unwrap().1.contains("nests with"));
        // A common prefix of bytes is not nesting.
        assert!(conflict(&[sp("log", Kind::Dir), sp("logs", Kind::Dir)]).is_none());
    }

    #[test]
    fn link_targets_climb_to_root() {
        let sp = |s: &str| SharedPath::new(s, Kind::Dir, "x").unwrap();
        assert_eq!(sp("storage").link_target(), "../../shared/storage");
        assert_eq!(
            sp("public/uploads").link_target(),
            "../../../shared/public/uploads"
        );
    }

    #[test]
    fn modes_are_octal_strings() {
        assert_eq!(parse_mode("0770"), Ok(0o770));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert_eq!(parse_mode("2775"), Ok(0o2775));
        for bad in ["", "77", "0778", "rwx", "17777", "+770", "0o770"] {
            assert!(parse_mode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn owners_are_names_or_uids() {
        let root = resolve_owner("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        // A uid that /etc/passwd lacks: its gid is the same number.
        let lone = resolve_owner("4000321").unwrap();
        assert_eq!((lone.uid, lone.gid), (4000321, 4000321));
        assert!(resolve_owner("no-such-user-xyz").is_err());
        assert!(resolve_owner("").is_err());
    }
}
