//! The report types against `schema/releasectl.v1.json`, key by key: a
//! field added to a report and not to the schema, or declared in the
//! schema and made by no report, fails here naming the command and the key.
//!
//! Each command's report types are serialised from a sample in which
//! every optional part is present (every `Option` `Some`, every list
//! non-empty), so that the keys it makes are all the keys it can make. The
//! samples are struct literals: a new field does not compile until the
//! sample gives it a value, and then its key is checked. Where a schema
//! object is reached by several reports (or list items), the keys they
//! make together must be the keys it declares; each one alone may make no
//! key it does not declare. `tests/it/json_schema.rs` checks the other
//! half on real runs: every document validates, with no undeclared key.

use super::{activate, check, deploy, history, list, mark, prune, recover, request, stage};
use super::{status, verify};
use crate::staging::stage::Plan;
use crate::state::history::{Entry, Event};
use crate::state::lock::Holder;
use crate::state::pending::Pending;
use crate::state::record::verify::Difference;
use crate::state::record::DedupRecord;
use crate::state::request::Report;
use crate::state::store::{PrunePlan, Release};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const SCHEMA: &str = include_str!("../../../schema/releasectl.v1.json");

/// A report as its command prints it: the command, the schema definition
/// the schema gives its result, and the report serialised.
struct Sample {
    command: &'static str,
    def: &'static str,
    value: Value,
}

fn sample(command: &'static str, def: &'static str, report: impl serde::Serialize) -> Sample {
    let value = serde_json::to_value(report).expect("a report serialises");
    Sample {
        command,
        def,
        value,
    }
}

/// The reports of several apps or requests, listed under `key` as
/// `Output::finish` lists them.
fn listed(command: &'static str, def: &'static str, key: &str, one: &Sample) -> Sample {
    let value = json!({ key: [one.value.clone()] });
    Sample {
        command,
        def,
        value,
    }
}

fn meta() -> BTreeMap<String, String> {
    BTreeMap::from([("git".to_string(), "0123abc".to_string())])
}

fn dedup() -> DedupRecord {
    DedupRecord {
        mode: "reflink".into(),
        from: "v1".into(),
        files: 2,
        bytes: 20,
        total_files: 3,
        total_bytes: 30,
    }
}

/// A history entry with every optional field present.
fn entry() -> Entry {
    Entry {
        time: "2026-01-01T00:00:00Z".into(),
        event: Event::RolledBack,
        app: Some("web".into()),
        from: Some("v1".into()),
        to: Some("v2".into()),
        reason: Some("health".into()),
        pid: 1,
        live: Some("v1".into()),
        uid: Some(0),
        user: Some("ops".into()),
        trigger: Some("path".into()),
        duration_ms: Some(5),
        meta: meta(),
        interrupted: Some("SIGTERM".into()),
        requester_uid: Some(1000),
        requester: Some("dev".into()),
    }
}

fn pending() -> Pending {
    Pending {
        from: Some("v1".into()),
        to: "v2".into(),
        pid: 1,
        started: "2026-01-01T00:00:00Z".into(),
        history_offset: 0,
    }
}

fn release() -> Release {
    Release {
        id: "v2".into(),
        created: Some("2026-01-01T00:00:00Z".into()),
        current: true,
        previous: false,
        bad: false,
        size: Some(30),
        meta: meta(),
        dedup: Some(dedup()),
    }
}

fn outcome() -> Report {
    Report {
        seq: 1,
        time: "2026-01-01T00:00:00Z".into(),
        app: "web".into(),
        release: Some("v2".into()),
        request_sha256: Some("00".repeat(32)),
        ino: Some(1),
        uid: Some(1000),
        mtime_ns: Some(1),
        outcome: "rolled_back".into(),
        exit_code: 11,
        message: "web: v2 failed".into(),
        previous: Some("v1".into()),
    }
}

/// Every report type of every command, each with every optional part. One
/// long list on purpose: a sample per report, field by field, to read down.
fn samples() -> Vec<Sample> {
    let root = Path::new("/srv/web");
    let ids = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let activation = sample(
        "activate",
        "activation",
        activate::Activation {
            app: Some("web"),
            root,
            outcome: activate::Did::Activated,
            release: "v2",
            previous: Some("v1"),
        },
    );
    let status = sample(
        "status",
        "status",
        status::Status {
            app: Some("web"),
            root,
            current: Some("v2"),
            previous: Some("v1"),
            last_good: Some("v1"),
            pending: Some(&pending()),
            interrupted: true,
            lock_holder: Some(&Holder {
                pid: 1,
                release: "v2".into(),
                since: "2026-01-01T00:00:00Z".into(),
            }),
            last: Some(&entry()),
            releases: 2,
            meta: Some(&meta()),
            dedup: Some(&dedup()),
            serving: Some(&crate::activation::Serving {
                slot: "green".into(),
                port: 8002,
                release: Some("v2".into()),
            }),
        },
    );
    let list = sample(
        "list",
        "list",
        list::ListReport {
            app: Some("web"),
            releases: &[release()],
        },
    );
    let history = sample(
        "history",
        "history",
        history::History {
            app: Some("web"),
            entries: &[entry()],
        },
    );
    let plan = PrunePlan {
        remove: ids(&["v0"]),
        keep: ids(&["v2"]),
        protected: ids(&["v1"]),
    };
    vec![
        listed(
            "activate",
            "activations",
            activate::ACTIVATIONS,
            &activation,
        ),
        Sample {
            command: "deploy",
            ..activation.clone_as()
        },
        Sample {
            command: "rollback",
            ..activation.clone_as()
        },
        activation,
        sample(
            "deploy",
            "activation",
            deploy::WouldDeploy {
                app: Some("web"),
                root,
                outcome: activate::Did::WouldDeploy,
                stage: Plan::WouldStage,
                source: Path::new("/tmp/build"),
                release: Some("v3"),
                previous: Some("v2"),
            },
        ),
        sample(
            "stage",
            "staged",
            stage::Staged {
                app: Some("web"),
                release: "v3",
                unchanged: false,
            },
        ),
        sample(
            "stage",
            "staged",
            stage::WouldStage {
                app: Some("web"),
                release: Some("v3"),
                outcome: Plan::Unchanged,
                source: Path::new("/tmp/build"),
            },
        ),
        sample(
            "request",
            "requested",
            request::Requested {
                app: "web",
                release: "v2",
                request: "token",
                file: Path::new("/run/releasectl/requests/web"),
            },
        ),
        sample("request", "request_outcome", outcome()),
        sample(
            "mark-bad",
            "marked",
            mark::Marked {
                app: Some("web"),
                release: "v2",
                marked: mark::Marking::Bad,
            },
        ),
        sample(
            "mark-good",
            "marked",
            mark::Marked {
                app: Some("web"),
                release: "v2",
                marked: mark::Marking::Good,
            },
        ),
        listed("status", "apps_status", super::APPS, &status),
        status,
        listed("list", "apps_list", super::APPS, &list),
        list,
        listed("history", "apps_history", super::APPS, &history),
        history,
        sample(
            "prune",
            "prune",
            prune::Pruned {
                dry_run: false,
                plan: &plan,
                leftovers_removed: Some(&ids(&[".tmp-v3"])),
            },
        ),
        sample(
            "check",
            "check",
            check::Checked {
                app: Some("web"),
                ok: false,
                checks: vec![check::CheckLine {
                    check: "root",
                    ok: true,
                    detail: "/srv/web",
                }],
            },
        ),
        sample(
            "verify",
            "verify",
            verify::Verified {
                app: Some("web"),
                release: "v2",
                matches: false,
                differences: &[Difference {
                    path: "index.html".into(),
                    change: "changed",
                    detail: "content".into(),
                }],
            },
        ),
        sample(
            "recover",
            "recover",
            recover::Recovered {
                apps: &[
                    recover::AppRecovery::Done {
                        app: Some("web".into()),
                        recovered: true,
                    },
                    recover::AppRecovery::Failed {
                        app: Some("api".into()),
                        error: "api: lock busy".into(),
                    },
                ],
            },
        ),
    ]
}

impl Sample {
    fn clone_as(&self) -> Sample {
        Sample {
            command: self.command,
            def: self.def,
            value: self.value.clone(),
        }
    }
}

/// The keys each object of the schema declares and the reports made there.
struct Walk<'s> {
    schema: &'s Value,
    /// Schema object (JSON pointer) → the keys made there, and by whom.
    made: BTreeMap<String, (BTreeSet<String>, BTreeSet<&'static str>)>,
    failures: Vec<String>,
}

impl<'s> Walk<'s> {
    /// Follow `$ref`s to the schema node itself.
    fn resolve(&self, pointer: String) -> (String, &'s Value) {
        let node = self
            .schema
            .pointer(&pointer)
            .unwrap_or_else(|| panic!("the schema has no {pointer}"));
        match node.get("$ref").and_then(Value::as_str) {
            Some(target) => self.resolve(target.trim_start_matches('#').to_string()),
            None => (pointer, node),
        }
    }

    /// The schema nodes `pointer` allows that have `key` (`properties`,
    /// `additionalProperties`, `items`): itself, or its `oneOf`/`anyOf`
    /// alternatives.
    fn shapes(&self, pointer: String, key: &str) -> Vec<(String, &'s Value)> {
        let (pointer, node) = self.resolve(pointer);
        if node.get(key).is_some() {
            return vec![(pointer, node)];
        }
        let mut found = Vec::new();
        for choice in ["oneOf", "anyOf"] {
            let n = node
                .get(choice)
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            for i in 0..n {
                found.extend(self.shapes(format!("{pointer}/{choice}/{i}"), key));
            }
        }
        found
    }

    /// Check `value`, made by `command` at `at` in its result, against the
    /// schema at `pointer`, and everything in it.
    fn walk(&mut self, command: &'static str, at: &str, pointer: String, value: &Value) {
        match value {
            Value::Object(map) => self.object(command, at, pointer, map),
            Value::Array(items) => {
                let Some((pointer, _)) = self.shapes(pointer.clone(), "items").pop() else {
                    return self
                        .failures
                        .push(format!("{command}: {at}: a list where {pointer} has none"));
                };
                for item in items {
                    self.walk(
                        command,
                        &format!("{at}[]"),
                        format!("{pointer}/items"),
                        item,
                    );
                }
            }
            _ => {}
        }
    }

    fn object(
        &mut self,
        command: &'static str,
        at: &str,
        pointer: String,
        map: &serde_json::Map<String, Value>,
    ) {
        let shapes = self.shapes(pointer.clone(), "properties");
        let [(pointer, node)] = shapes.as_slice() else {
            // A map of the user's keys (`meta`): no keys to compare.
            if self
                .shapes(pointer.clone(), "additionalProperties")
                .is_empty()
            {
                self.failures.push(format!(
                    "{command}: {at}: an object where {pointer} has {} object shapes",
                    shapes.len()
                ));
            }
            return;
        };
        let declared = &node["properties"];
        let made = self.made.entry(pointer.clone()).or_default();
        made.1.insert(command);
        for key in map.keys() {
            made.0.insert(key.clone());
            if declared.get(key).is_none() {
                self.failures.push(format!(
                    "{command}: {at}.{key}: made by the report, not declared in the schema ({pointer})"
                ));
            }
        }
        let pointer = pointer.clone();
        for (key, inner) in map {
            if declared.get(key).is_some() {
                let inner_pointer = format!("{pointer}/properties/{key}");
                self.walk(command, &format!("{at}.{key}"), inner_pointer, inner);
            }
        }
    }

    /// Every key a schema object declares is made by some report there.
    fn unmade(&mut self) {
        for (pointer, (keys, commands)) in &self.made {
            let node = self.schema.pointer(pointer).expect("walked");
            let declared = node["properties"].as_object().expect("an object shape");
            for key in declared.keys().filter(|k| !keys.contains(*k)) {
                let commands = commands.iter().copied().collect::<Vec<_>>().join(", ");
                self.failures.push(format!(
                    "{commands}: `{key}` is declared in the schema ({pointer}) but no report makes it"
                ));
            }
        }
    }
}

/// What result definitions the schema gives each command: its `allOf`
/// `if command ... then result ...` clauses.
fn results_by_command(schema: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut by = BTreeMap::new();
    for clause in schema["allOf"].as_array().expect("allOf") {
        let command = &clause["if"]["properties"]["command"];
        let Some(result) = clause["then"]["properties"].get("result") else {
            continue;
        };
        let commands: Vec<&Value> = match command.get("const") {
            Some(one) => vec![one],
            None => command["enum"].as_array().expect("enum").iter().collect(),
        };
        let refs: Vec<&Value> = match result.get("oneOf") {
            Some(choices) => choices.as_array().expect("oneOf").iter().collect(),
            None => vec![result],
        };
        let defs: BTreeSet<String> = refs
            .iter()
            .map(|r| r["$ref"].as_str().expect("a $ref"))
            .map(|r| r.trim_start_matches("#/$defs/").to_string())
            .collect();
        for c in commands {
            by.insert(c.as_str().expect("a name").to_string(), defs.clone());
        }
    }
    by
}

#[test]
fn every_report_makes_exactly_the_keys_the_schema_declares() {
    let schema: Value = serde_json::from_str(SCHEMA).expect("the schema parses");
    let samples = samples();
    let mut walk = Walk {
        schema: &schema,
        made: BTreeMap::new(),
        failures: Vec::new(),
    };
    // Each command's report types are the results the schema gives it.
    let allowed = results_by_command(&schema);
    let names = schema["properties"]["command"]["enum"]
        .as_array()
        .expect("the commands");
    for name in names.iter().filter_map(Value::as_str) {
        let checked: BTreeSet<String> = samples
            .iter()
            .filter(|s| s.command == name)
            .map(|s| s.def.to_string())
            .collect();
        let declared = allowed.get(name).cloned().unwrap_or_default();
        if checked != declared {
            walk.failures.push(format!(
                "{name}: the schema gives its result as {declared:?}, the reports checked are {checked:?}"
            ));
        }
    }
    for s in &samples {
        walk.walk(s.command, "result", format!("/$defs/{}", s.def), &s.value);
    }
    walk.unmade();
    assert!(
        walk.failures.is_empty(),
        "the reports and schema/releasectl.v1.json differ:\n{}",
        walk.failures.join("\n")
    );
}
