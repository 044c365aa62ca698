//! The `--json` contract: every command's real output, on success and on
//! each kind of failure, validates against `schema/releasectl.v1.json`
//! (JSON Schema 2020-12, checked with Debian's python3-jsonschema, which
//! `.ci/run` installs: the test is ignored without `--include-ignored`),
//! and makes no key the schema does not declare.
//!
//! The other direction, a key the schema declares and no report makes, is
//! the unit test in `src/cli/commands/schema_tests.rs`, which checks every
//! report type key by key.

use crate::common;

use common::{Dir, Run};
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

#[track_caller]
fn validator_ready() {
    let ok = Command::new(PYTHON)
        .args(["-c", "import jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        common::missing(&format!(
            "{PYTHON} with jsonschema (python3-jsonschema) not installed"
        ));
    }
}

/// Validate every document; return the failures, one line each.
///
/// The schema published lets consumers meet keys it does not know (fields
/// are added within releasectl.v1); ours must not make any: here every
/// object it defines is closed (`additionalProperties: false`), so a key
/// added to a report and not to the schema fails, naming the key.
fn validate(docs: &[(String, String)]) -> Vec<String> {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/releasectl.v1.json");
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
def close(node):
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for inner in node.values():
            close(inner)
    elif isinstance(node, list):
        for inner in node:
            close(inner)
close(schema["$defs"])
v = jsonschema.Draft202012Validator(schema)
for line in sys.stdin:
    name, doc = json.loads(line)
    for e in v.iter_errors(json.loads(doc)):
        print(f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
"#;
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .arg(&schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for (name, doc) in docs {
        writeln!(stdin, "{}", serde_json::json!([name, doc])).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the validator failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

struct Docs(Vec<(String, String)>);

impl Docs {
    /// Keep the document of `r` (checked to be the envelope first).
    fn add(&mut self, name: &str, r: &Run) {
        r.envelope();
        self.0.push((name.to_string(), r.stdout.clone()));
    }
}

#[test]
#[ignore = "needs python3-jsonschema (installed by .ci/run; run with --include-ignored)"]
fn every_document_matches_the_schema() {
    validator_ready();
    let d = Dir::new();
    d.releases(&["v1", "v2", "v3"]);
    let src = d.outside().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("index.html"), "hi\n").unwrap();
    symlink("index.html", src.join("home")).unwrap();
    d.config(
        "web",
        "root = \"{root}\"\n[health]\ncommand = [\"/bin/sh\", \"-c\", \"test \\\"$RELEASECTL_RELEASE\\\" != v3\"]\nretries = 1\n",
    );
    let requests = d.outside().join("requests");
    std::fs::create_dir(&requests).unwrap();
    std::fs::create_dir(d.outside().join("results")).unwrap();
    std::fs::set_permissions(
        d.outside().join("results"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let mut docs = Docs(Vec::new());
    let json = |args: &[&str]| {
        let mut c = d.cmd_config();
        c.arg("--json").args(args);
        c
    };

    docs.add("activate", &json(&["activate", "web:v1"]).ok());
    docs.add("activate already", &json(&["activate", "web:v1"]).ok());
    docs.add(
        "activate dry-run",
        &json(&["activate", "web:v2", "--dry-run"]).ok(),
    );
    docs.add("activate 11", &json(&["activate", "web:v3"]).expect(11));
    docs.add("activate 2", &json(&["activate", "web:nope"]).expect(2));
    docs.add("activate v2", &json(&["activate", "web:v2"]).ok());
    let mut c = d.cmd_config();
    c.arg("--json")
        .arg("stage")
        .arg(&src)
        .args(["--app", "web", "--id", "s1", "--meta", "by=ci"]);
    docs.add("stage", &c.ok());
    let mut c = d.cmd_config();
    c.args(["--json", "stage"])
        .arg(&src)
        .args(["--app", "web", "--id", "s1"]);
    docs.add("stage unchanged", &c.ok());
    for id in [&["--id", "s1"][..], &["--id", "s2"], &[]] {
        let mut c = d.cmd_config();
        c.args(["--json", "stage", "--dry-run", "--app", "web"])
            .arg(&src)
            .args(id);
        docs.add("stage dry-run", &c.ok());
    }
    let mut c = d.cmd_config();
    c.arg("--json")
        .arg("deploy")
        .arg(&src)
        .args(["--app", "web", "--dry-run"]);
    docs.add("deploy dry-run", &c.ok());
    let mut c = d.cmd_config();
    c.arg("--json").arg("deploy").arg(&src).args([
        "--app",
        "web",
        "--id",
        "s2",
        "--meta",
        "git=0123abc",
    ]);
    docs.add("deploy", &c.ok());
    docs.add("status with meta", &json(&["status", "web"]).ok());
    docs.add("rollback", &json(&["rollback", "web"]).ok());
    docs.add("mark-bad", &json(&["mark-bad", "web:s2"]).ok());
    docs.add("mark-good", &json(&["mark-good", "web:s2"]).ok());
    docs.add("status", &json(&["status", "web"]).ok());
    docs.add("list", &json(&["list", "web"]).ok());
    docs.add("history", &json(&["history", "web"]).ok());
    docs.add("prune dry-run", &json(&["prune", "web", "--dry-run"]).ok());
    docs.add("check", &json(&["check", "web"]).ok());
    docs.add("verify", &json(&["verify", "web:s1"]).ok());
    std::fs::write(d.path("releases/s1/index.html"), "changed\n").unwrap();
    docs.add("verify 14", &json(&["verify", "web:s1"]).expect(14));
    docs.add("recover", &json(&["recover", "web"]).ok());

    // The request path: a request, and an outcome waited for.
    let mut c = d.cmd_config();
    c.args(["--json", "request", "web:v2", "--requests-dir"])
        .arg(&requests);
    docs.add("request", &c.ok());
    let mut c = d.cmd_config();
    c.args(["--json", "activate", "--request", "web", "--requests-dir"])
        .arg(&requests);
    docs.add("activate --request", &c.run());
    let _ = std::fs::remove_file(requests.join("web"));
    let mut c = d.cmd_config();
    c.args([
        "--json",
        "request",
        "web:v3",
        "--wait",
        "--timeout",
        "30",
        "--requests-dir",
    ])
    .arg(&requests);
    let mut waiter = c.spawn();
    if !common::wait_for(&requests.join("web"), Duration::from_secs(10)) {
        let _ = waiter.kill();
        let out = waiter.wait_with_output().unwrap();
        panic!(
            "request --wait wrote no request: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut c = d.cmd_config();
    c.args(["activate", "--request", "web", "--requests-dir"])
        .arg(&requests);
    c.run();
    let out = waiter.wait_with_output().unwrap();
    let waited = Run {
        shown: "request --wait".into(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(waited.code, Some(11), "{waited}");
    docs.add("request --wait 11", &waited);

    docs.add("prune", &json(&["prune", "web", "--keep", "2"]).ok());

    // Several apps: the reports listed under "apps"; an interrupted one.
    let api = d.outside().join("api");
    std::fs::create_dir_all(api.join("releases/a1")).unwrap();
    d.config("api", &format!("root = \"{}\"\n", api.display()));
    json(&["activate", "api:a1"]).ok();
    docs.add("status apps", &json(&["status"]).ok());
    docs.add("list apps", &json(&["list"]).ok());
    docs.add("history apps", &json(&["history"]).ok());
    std::fs::write(
        api.join(".releasectl/pending.json"),
        "{\"from\":null,\"to\":\"a1\",\"pid\":999999,\"started\":\"2026-01-01T00:00:00Z\",\"history_offset\":0}\n",
    )
    .unwrap();
    docs.add("status 13", &json(&["status"]).expect(13));
    docs.add("recover all", &json(&["recover", "--all"]).ok());

    // Failures of other kinds: no app named among several, a missing root.
    docs.add("usage", &json(&["rollback"]).expect(2));
    let mut c = d.cmd();
    c.args(["--json", "--root", "/nonexistent/root", "status"]);
    docs.add("no root", &c.expect(2));

    let mut c = d.cmd();
    c.args(["--json", "stauts"]);
    docs.add("no such command", &c.expect(2));

    // Controls: documents that break the contract are caught.
    let controls = [
        (
            "control: exit 4",
            r#"{"schema":"releasectl.v1","command":"status","ok":false,"exit_code":4,"error":{"kind":"usage","message":"x","app":null,"release":null,"current":null,"pending":null}}"#,
        ),
        (
            "control: ok with error",
            r#"{"schema":"releasectl.v1","command":"list","ok":true,"exit_code":0,"error":{"kind":"usage","message":"x","app":null,"release":null,"current":null,"pending":null}}"#,
        ),
        (
            "control: list as array",
            r#"{"schema":"releasectl.v1","command":"list","ok":true,"exit_code":0,"result":[]}"#,
        ),
        (
            "control: undeclared key",
            r#"{"schema":"releasectl.v1","command":"mark-bad","ok":true,"exit_code":0,"result":{"app":null,"release":"v1","marked":"bad","by":"x"}}"#,
        ),
        (
            "control: undeclared key deeper",
            r#"{"schema":"releasectl.v1","command":"prune","ok":true,"exit_code":0,"result":{"dry_run":true,"plan":{"remove":[],"keep":[],"protected":[],"why":[]}}}"#,
        ),
        (
            "control: bad id",
            r#"{"schema":"releasectl.v1","command":"stage","ok":true,"exit_code":0,"result":{"app":null,"release":"../x"}}"#,
        ),
    ];
    let caught = validate(
        &controls
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_string()))
            .collect::<Vec<_>>(),
    );
    for (name, _) in controls {
        assert!(
            caught.iter().any(|f| f.starts_with(name)),
            "the schema does not catch {name}: {caught:?}"
        );
    }

    let failures = validate(&docs.0);
    assert!(
        failures.is_empty(),
        "{} document(s) do not match schema/releasectl.v1.json:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{} documents validated", docs.0.len());
}
