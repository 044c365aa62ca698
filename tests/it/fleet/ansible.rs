//! Ansible as a user runs it: ansible-core from the venv `.ci/run` makes
//! (pinned by `ansible/requirements.txt`), the collection built with
//! `ansible-galaxy collection build` and installed offline from the tarball,
//! a config file of our own and no `ANSIBLE_*` variable from the
//! environment.

use super::fixture::{index_html, Fleet};
use crate::common::missing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn collection_src() -> PathBuf {
    repo().join("ansible/ansible_collections/releasectl/fleet")
}

/// The venv holding ansible-playbook: `RELEASECTL_ANSIBLE_VENV`, else
/// `target/ansible-venv`. The test fails when it is missing.
#[track_caller]
pub fn venv_checked() -> PathBuf {
    let venv = std::env::var_os("RELEASECTL_ANSIBLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/ansible-venv"));
    if !venv.join("bin/ansible-playbook").is_file() {
        missing(&format!(
            "fleet: no {}/bin/ansible-playbook: python3 -m venv target/ansible-venv && \
             target/ansible-venv/bin/pip install -r ansible/requirements.txt",
            venv.display()
        ));
    }
    venv
}

pub struct Ansible {
    pub venv: PathBuf,
    pub dir: tempfile::TempDir,
}

/// One ansible-playbook run: exit status, stdout+stderr, and the PLAY RECAP.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub out: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// `host1 : ok=5 changed=2 unreachable=0 failed=0 …` lines of the last
    /// PLAY RECAP, as host → counter → value.
    pub fn recap(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut map = BTreeMap::new();
        let Some(tail) = self.out.rsplit("PLAY RECAP").next() else {
            return map;
        };
        for line in tail.lines() {
            let Some((host, counts)) = line.split_once(" : ") else {
                continue;
            };
            let counts: BTreeMap<String, u64> = counts
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                .collect();
            if !counts.is_empty() {
                map.insert(host.trim().to_string(), counts);
            }
        }
        map
    }

    /// `TASK [name]: changed: [host]` for every change the play reported.
    pub fn changes(&self) -> Vec<String> {
        let mut task = "";
        let mut v = Vec::new();
        for line in self.out.lines() {
            if let Some(t) = line.strip_prefix("TASK [") {
                task = t.split("] ").next().unwrap_or(t);
            } else if line.starts_with("changed: ") {
                v.push(format!("TASK [{task}]: {line}"));
            }
        }
        v
    }

    pub fn count(&self, host: &str, what: &str) -> u64 {
        self.recap()
            .get(host)
            .and_then(|c| c.get(what).copied())
            .unwrap_or_else(|| panic!("no {what} for {host} in the recap:\n{}", self.out))
    }
}

impl Ansible {
    /// Build and install the collection into a temp collections path, write
    /// the config and the inventory of `fleet`.
    pub fn setup(venv: &Path, fleet: &Fleet) -> Ansible {
        let dir = tempfile::Builder::new()
            .prefix("rctl-ans")
            .tempdir()
            .expect("tempdir");
        let a = Ansible {
            venv: venv.to_path_buf(),
            dir,
        };
        for d in ["home", "build", "collections", "cp", "art", "tmp"] {
            std::fs::create_dir_all(a.path(d)).unwrap();
        }
        let cfg = format!(
            "[defaults]\n\
             inventory = {inv}\n\
             collections_path = {col}\n\
             host_key_checking = False\n\
             interpreter_python = /usr/bin/python3\n\
             gathering = explicit\n\
             retry_files_enabled = False\n\
             nocolor = True\n\
             forks = 10\n\
             local_tmp = {tmp}\n\
             \n[ssh_connection]\n\
             pipelining = True\n\
             control_path_dir = {cp}\n\
             ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null \
             -o StrictHostKeyChecking=no -o LogLevel=ERROR -o ConnectTimeout=10\n",
            inv = a.path("inventory.ini").display(),
            col = a.path("collections").display(),
            tmp = a.path("tmp").display(),
            cp = a.path("cp").display(),
        );
        std::fs::write(a.path("ansible.cfg"), cfg).unwrap();
        let mut inv = String::from("[web]\n");
        for h in &fleet.hosts {
            inv += &format!(
                "{} ansible_host=127.0.0.1 ansible_port={} ansible_user=root \
                 ansible_ssh_private_key_file={}\n",
                h.name,
                h.ssh_port,
                fleet.key().display()
            );
        }
        std::fs::write(a.path("inventory.ini"), inv).unwrap();

        let out = a.check(
            a.cmd("ansible-galaxy")
                .args(["collection", "build", "--force", "--output-path"])
                .arg(a.path("build"))
                .arg(collection_src()),
        );
        let tarball = std::fs::read_dir(a.path("build"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
            .unwrap_or_else(|| panic!("ansible-galaxy built no tarball:\n{}", text(&out)));
        a.check(
            a.cmd("ansible-galaxy")
                .args(["collection", "install", "--offline", "--force", "-p"])
                .arg(a.path("collections"))
                .arg(&tarball),
        );
        a
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A command from the venv with a clean environment and our config.
    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = venv_cmd(&self.venv, &self.path("home"), tool);
        c.env("ANSIBLE_CONFIG", self.path("ansible.cfg"))
            .current_dir(self.dir.path());
        c
    }

    #[track_caller]
    fn check(&self, cmd: &mut Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\n{}",
            out.status,
            text(&out)
        );
        out
    }

    /// A .tar.gz on the controller whose `index.html` says `release ID;`.
    pub fn artifact(&self, release: &str) -> PathBuf {
        self.artifact_with(release, &index_html(release))
    }

    pub fn artifact_with(&self, release: &str, content: &str) -> PathBuf {
        let src = self.path(&format!("art/src-{release}"));
        let tarball = self.path(&format!("art/{release}.tar.gz"));
        // The same artifact for the same release: a re-run ships the same
        // bytes (tar records mtimes, so a rebuilt tarball would differ).
        if tarball.exists()
            && std::fs::read_to_string(src.join("index.html"))
                .ok()
                .as_deref()
                == Some(content)
        {
            return tarball;
        }
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("index.html"), content).unwrap();
        let out = Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success(), "tar: {}", text(&out));
        tarball
    }

    /// A .tar.gz on the controller holding `files` (name, content), for a
    /// rollout of another app than `web` (`releasectl_artifact`). Named
    /// `name`, made once: a re-run ships the same bytes.
    pub fn artifact_files(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let src = self.path(&format!("art/files-{name}"));
        let tarball = self.path(&format!("art/files-{name}.tar.gz"));
        if tarball.exists() {
            return tarball;
        }
        std::fs::create_dir_all(&src).unwrap();
        for (file, content) in files {
            std::fs::write(src.join(file), content).unwrap();
        }
        let out = Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success(), "tar: {}", text(&out));
        tarball
    }

    /// The vars file of a rollout of `release` (artifact made here), with
    /// `extra` merged in.
    pub fn vars(&self, release: &str, extra: serde_json::Value) -> PathBuf {
        let mut vars = serde_json::json!({
            "releasectl_app": super::fixture::APP,
            "releasectl_artifact": self.artifact(release),
            "releasectl_release": release,
        });
        if let serde_json::Value::Object(m) = extra {
            for (k, v) in m {
                vars[k] = v;
            }
        }
        let p = self.path(&format!("vars-{release}-{}.json", unique()));
        std::fs::write(&p, serde_json::to_vec_pretty(&vars).unwrap()).unwrap();
        p
    }

    /// `ansible-playbook releasectl.fleet.rollout -e @VARS ARGS…`, not
    /// waited for; output goes to a file read by [`Ansible::finish`].
    pub fn spawn_rollout(&self, vars: &Path, args: &[&str]) -> (Child, PathBuf) {
        let log = self.path(&format!("rollout-{}.log", unique()));
        let f = std::fs::File::create(&log).unwrap();
        let child = self
            .cmd("ansible-playbook")
            .arg("releasectl.fleet.rollout")
            .arg("-e")
            .arg(format!("@{}", vars.display()))
            .args(args)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start ansible-playbook");
        (child, log)
    }

    pub fn finish(&self, (mut child, log): (Child, PathBuf)) -> Run {
        let status = child.wait().expect("wait for ansible-playbook");
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        Run {
            code: status.code(),
            out,
        }
    }

    /// Roll `release` out with the playbook and wait for it.
    pub fn rollout(&self, release: &str, extra: serde_json::Value, args: &[&str]) -> Run {
        let vars = self.vars(release, extra);
        let run = self.finish(self.spawn_rollout(&vars, args));
        eprintln!(
            "--- ansible-playbook rollout {release} {args:?}: exit {:?}\n{}",
            run.code,
            tail(&run.out, 60)
        );
        run
    }
}

/// `VENV/bin/TOOL` with nothing from this process's environment but a PATH,
/// HOME and a UTF-8 locale (Ansible refuses others).
fn venv_cmd(venv: &Path, home: &Path, tool: &str) -> Command {
    let mut c = Command::new(venv.join("bin").join(tool));
    c.env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                venv.join("bin").display()
            ),
        )
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null());
    c
}

fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `ansible-test sanity` over a git-less copy of the collection, laid out as
/// ansible-test needs it (`…/ansible_collections/releasectl/fleet`), with
/// the venv's ansible-test (`--local`: no Docker; each test still gets a
/// virtualenv of its own). Those venvs are kept in
/// `target/ansible-test-home` between runs: building them is most of the
/// first run's time.
pub fn sanity(venv: &Path) {
    let tmp = tempfile::Builder::new()
        .prefix("rctl-sanity")
        .tempdir()
        .unwrap();
    let dest = tmp.path().join("ansible_collections/releasectl/fleet");
    std::fs::create_dir_all(&dest).unwrap();
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", collection_src().display()))
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp: {}", text(&out));
    let _ = std::fs::remove_dir_all(dest.join("tests/output"));
    // ansible-test bootstraps pip in its venvs with a script from a host
    // outside the package registries; the collection ships a stand-in that
    // uses the interpreter's own ensurepip (ansible/tools/).
    let home = repo().join("target/ansible-test-home");
    let cache = home.join(".ansible/test/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let pip = pip_version(venv);
    std::fs::copy(
        repo().join("ansible/tools/get-pip-from-ensurepip.py"),
        cache.join(format!("get_pip_{}.py", pip.replace('.', "_"))),
    )
    .expect("copy ansible/tools/get-pip-from-ensurepip.py");
    let out = venv_cmd(venv, &home, "ansible-test")
        .args(SANITY_ARGS)
        .current_dir(&dest)
        .output()
        .expect("run ansible-test");
    println!("ansible-test sanity:\n{}", tail(&text(&out), 40));
    assert!(
        out.status.success(),
        "ansible-test sanity failed ({}):\n{}",
        out.status,
        text(&out)
    );
}

/// The arguments of `ansible-test`, as ansible/README.md gives them.
pub const SANITY_ARGS: &[&str] = &["sanity", "--local", "--python", "3.11", "--color", "no"];

/// The pip version ansible-test bootstraps in its venvs.
fn pip_version(venv: &Path) -> String {
    let lib = venv.join("lib");
    let file = std::fs::read_dir(&lib)
        .expect("venv lib")
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages/ansible_test/_internal/python_requirements.py")
        })
        .find(|p| p.is_file())
        .expect("ansible_test in the venv");
    let text = std::fs::read_to_string(file).unwrap();
    text.split("pip='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the pip version in ansible_test")
        .to_string()
}
