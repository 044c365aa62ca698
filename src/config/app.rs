//! Which app a command acts on: `--root DIR` (ad hoc, no config) or a
//! configured app from the config directory.

use crate::config;
use crate::config::Config;
use crate::error::{usage, Result};
use crate::fs::dir::Dir;
use crate::fs::root::RootDir;
use std::path::{Path, PathBuf};

pub struct App {
    /// `None` in `--root` mode.
    pub name: Option<String>,
    pub config: Config,
    pub root: RootDir,
}

/// Where apps come from, as given by the global options.
#[derive(Debug, Clone)]
pub enum Source {
    Root(PathBuf),
    ConfigDir(PathBuf),
}

impl Source {
    pub fn from_options(root: Option<PathBuf>, config_dir: Option<PathBuf>) -> Source {
        match root {
            Some(r) => Source::Root(r),
            None => {
                Source::ConfigDir(config_dir.unwrap_or_else(|| config::DEFAULT_CONFIG_DIR.into()))
            }
        }
    }

    pub fn allows_app(&self) -> bool {
        matches!(self, Source::ConfigDir(_))
    }

    /// Resolve `app` (or the single configured app) and open its root.
    pub fn open(&self, app: Option<&str>) -> Result<App> {
        match self {
            Source::Root(dir) => {
                if let Some(app) = app {
                    return Err(usage(format!(
                        "app \"{app}\" given together with --root; use one or the other"
                    )));
                }
                let root = absolute(dir)?;
                Ok(App {
                    name: None,
                    config: Config::ad_hoc(root.clone()),
                    root: RootDir::open(&root)?,
                })
            }
            Source::ConfigDir(dir) => {
                let name = match app {
                    Some(a) => {
                        crate::release_id::validate_app(a)?;
                        a.to_string()
                    }
                    None => self.single_app(dir)?,
                };
                let config = Config::load(dir, &name)?;
                let root = RootDir::open(&config.root)?;
                Ok(App {
                    name: Some(name),
                    config,
                    root,
                })
            }
        }
    }

    /// The app a request names, or the single configured one. Request
    /// files are per configured app: `--root` has none.
    pub fn app_name(&self, app: Option<&str>) -> Result<String> {
        match (self, app) {
            (Source::Root(_), _) => Err(usage(
                "requests are per configured app (deploy-watch@APP.path); --root names none",
            )),
            (Source::ConfigDir(_), Some(a)) => {
                crate::release_id::validate_app(a)?;
                Ok(a.to_string())
            }
            (Source::ConfigDir(dir), None) => self.single_app(dir),
        }
    }

    /// Every configured app (for `recover --all`); empty in `--root` mode.
    pub fn all_apps(&self) -> Result<Vec<String>> {
        match self {
            Source::Root(_) => Ok(Vec::new()),
            Source::ConfigDir(dir) => match config::list_apps(dir) {
                Ok(apps) => Ok(apps),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(crate::error::Error::op_ctx(
                    e,
                    format_args!("reading {}", dir.display()),
                )),
            },
        }
    }

    fn single_app(&self, dir: &Path) -> Result<String> {
        let apps = self.all_apps()?;
        match apps.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(usage(format!(
                "no app configured in {} (use --root DIR for an ad hoc root)",
                dir.display()
            ))),
            many => Err(usage(format!(
                "several apps configured, name one of: {}",
                many.join(", ")
            ))),
        }
    }
}

impl App {
    /// "web", or the root path in `--root` mode: how messages name the app.
    /// The app as errors name it.
    pub fn subject(&self) -> crate::error::AppRef {
        crate::error::AppRef {
            name: self.name.clone(),
            label: self.label(),
        }
    }

    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.root.path().display().to_string())
    }

    pub fn state_dir(&self, create: bool) -> Result<Option<Dir>> {
        self.root.state_dir(create)
    }
}

/// Roots are kept absolute so messages and `RELEASECTL_ROOT` are unambiguous.
fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| usage(format!("cannot resolve {}: {e}", dir.display())))?;
    Ok(cwd.join(dir))
}
