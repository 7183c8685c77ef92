//! Purges with provenance: `mark-purged` cannot backdate a purge to hide a tainted read, every
//! purge a trace applies is listed with who recorded it and how, imported purges stay
//! `imported`, and `--ignore-purges` shows what purges hid.

use std::process::Command;

use insta::assert_snapshot;

use crate::common::{Env, ok, output};
use crate::schemas::assert_valid;

const PIP: &str = "/root/.cache/pip";
/// After `forks-pr/7-1` wrote the pip mount, before `web-release/101-1` read it.
const BACKDATED: &str = "2026-11-03T15:00:00Z";
const REASON: &str = "pip cache wiped by hand on ci-1 on Nov 3, logged late";

/// The example incident's history in a fresh store.
fn example() -> Env {
    let env = Env::new();
    let history = format!(
        "{}/examples/incident-history.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    ok(env.cmd().args(["import", &history]));
    env
}

fn trace_json(env: &Env, extra: &[&str]) -> serde_json::Value {
    let out = ok(env
        .cmd()
        .args(["trace", "--pipeline", "forks-pr", "--format", "json"])
        .args(extra));
    let doc = serde_json::from_str(&out).unwrap();
    assert_valid("trace.schema.json", &doc);
    doc
}

fn trace_text(env: &Env, extra: &[&str]) -> String {
    ok(env
        .cmd()
        .args(["trace", "--pipeline", "forks-pr"])
        .args(extra))
}

fn runs(doc: &serde_json::Value) -> Vec<String> {
    doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

fn mark_pip(env: &Env, extra: &[&str]) -> Command {
    let mut cmd = env.cmd();
    cmd.args(["mark-purged", "--builder", "ci-1", "--mount", PIP])
        .args(extra);
    cmd
}

fn purge_lines(env: &Env) -> Vec<serde_json::Value> {
    ok(env.cmd().arg("export"))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "purge")
        .collect()
}

/// The account the purges name: the OS user from the password database, at this host.
fn me() -> String {
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    format!("{}@", user.trim())
}

/// The attack: a purge backdated to between the poisoned write and the trusted read shrank
/// the example incident to its seed. It is refused with exit 2, naming the last use, and the
/// blast radius stays 3 runs, 1 cache ref, 2 images.
#[test]
fn a_backdated_purge_is_refused_and_the_blast_radius_holds() {
    let env = example();
    let before = trace_text(&env, &[]);
    assert!(
        before.contains("blast radius: 3 runs, 1 cache ref, 1 mount, 2 builders, 2 images"),
        "{before}"
    );
    let out = output(&env, &mut mark_pip(&env, &["--at", BACKDATED]));
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(
        out.contains("run:web-release/101-1/Dockerfile at 2026-11-04T09:07:00Z"),
        "the refusal names the last use: {out}"
    );
    assert!(out.contains(BACKDATED), "{out}");
    assert!(purge_lines(&env).is_empty(), "a refused purge was stored");
    assert_eq!(trace_text(&env, &[]), before);
    // A note is not a licence: `--reason` alone does not let a backdated purge through.
    let out = output(
        &env,
        &mut mark_pip(&env, &["--at", BACKDATED, "--reason", "x"]),
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    // The same holds for a prune of the whole builder.
    let out = output(
        &env,
        env.cmd()
            .args(["mark-purged", "--builder", "ci-1", "--at", BACKDATED]),
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(
        out.contains("before the last recorded use of builder `ci-1`"),
        "{out}"
    );
    // The builder's last use is the latest end of a run on it.
    assert!(
        out.contains("run:docs/9-1/Dockerfile at 2026-11-05T11:03:00Z"),
        "{out}"
    );
    assert_eq!(trace_text(&env, &[]), before);
}

/// A purge time in the future (beyond the allowed clock skew) is refused with exit 2 naming
/// it, even with `--force`; one within the skew is recorded.
#[test]
fn a_purge_in_the_future_is_refused() {
    let env = example();
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for extra in [&[][..], &["--force", "--reason", REASON][..]] {
        let mut cmd = mark_pip(&env, &["--at", &later]);
        let out = output(&env, cmd.args(extra));
        assert!(out.starts_with("exit: 2\n"), "{out}");
        assert!(
            out.contains(&format!("`{later}` is in the future")),
            "{out}"
        );
    }
    assert!(purge_lines(&env).is_empty());
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    ok(&mut mark_pip(&env, &["--at", &soon]));
    assert_eq!(purge_lines(&env).len(), 1);
}

/// `--force` needs a reason: an unexplained late entry is bad input.
#[test]
fn force_without_a_reason_is_refused() {
    let env = example();
    let out = output(&env, &mut mark_pip(&env, &["--at", BACKDATED, "--force"]));
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(out.contains("--reason"), "{out}");
    assert!(purge_lines(&env).is_empty());
}

/// An honest late entry: `--force --reason` records the backdated purge as forced, and the
/// trace, its JSON and the incident report list it as a manual, forced purge with its author
/// and reason, next to what it cut; `--ignore-purges` (also kept by `incident open`) shows the
/// blast radius it hid.
#[test]
fn a_forced_late_entry_is_shown_as_forced_and_ignore_purges_shows_what_it_hid() {
    let env = example();
    let full = runs(&trace_json(&env, &[]));
    assert_eq!(full.len(), 3, "{full:?}");
    let out = output(
        &env,
        &mut mark_pip(&env, &["--at", BACKDATED, "--force", "--reason", REASON]),
    );
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(out.contains("forced"), "{out}");

    let text = trace_text(&env, &[]);
    let line = text
        .lines()
        .find(|l| l.contains("purge 1 of mount /root/.cache/pip on ci-1"))
        .unwrap_or_else(|| panic!("no purge line:\n{text}"));
    assert!(text.contains("purges applied (1;"), "{text}");
    assert!(
        line.starts_with(&format!("  {BACKDATED}  purge 1 ")),
        "{line}"
    );
    assert!(line.contains(&format!("manual by `{}", me())), "{line}");
    assert!(line.contains("FORCED late entry"), "{line}");
    assert!(line.contains(&format!("reason: `{REASON}`")), "{line}");
    assert!(line.contains("kept out of the blast radius"), "{line}");

    let doc = trace_json(&env, &[]);
    assert_eq!(runs(&doc), vec!["run:forks-pr/7-1/Dockerfile"]);
    assert_eq!(doc["ignore_purges"], false);
    let purges = doc["purges"].as_array().unwrap();
    assert_eq!(purges.len(), 1, "{doc:#}");
    let p = &purges[0];
    assert_eq!(p["method"], "manual");
    assert_eq!(p["forced"], true);
    assert_eq!(p["reason"], REASON);
    assert_eq!(p["at"], BACKDATED);
    assert!(p["author"].as_str().unwrap().starts_with(&me()), "{p}");
    assert!(p["recorded_at"].is_string(), "{p}");
    assert_eq!(
        p["cleaned"],
        serde_json::json!(["mount:ci-1:/root/.cache/pip"])
    );
    assert_eq!(p["kept_out"], 1);

    let unpurged = trace_json(&env, &["--ignore-purges"]);
    assert_eq!(runs(&unpurged), full);
    assert_eq!(unpurged["ignore_purges"], true);
    assert_eq!(unpurged["purges"], serde_json::json!([]));
    assert!(
        trace_text(&env, &["--ignore-purges"]).contains("blast radius (purges ignored): 3 runs"),
    );

    // The report says whose word the purge rests on; an incident opened with
    // `--ignore-purges` keeps the flag and the wider blast radius.
    ok(env
        .cmd()
        .args(["incident", "open", "--pipeline", "forks-pr"]));
    let report = ok(env.cmd().args(["incident", "report", "1"]));
    assert!(report.contains("### Purges applied (1)"), "{report}");
    assert!(report.contains("**manual**"), "{report}");
    assert!(report.contains("**forced** late entry"), "{report}");
    assert!(report.contains(REASON), "{report}");
    ok(env.cmd().args([
        "incident",
        "open",
        "--pipeline",
        "forks-pr",
        "--ignore-purges",
    ]));
    let report = ok(env
        .cmd()
        .args(["incident", "report", "2", "--format", "json"]));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_valid("report.schema.json", &report);
    assert_eq!(report["trace"]["ignore_purges"], true);
    assert_eq!(runs(&report["trace"]), full);
    let md = ok(env.cmd().args(["incident", "report", "2"]));
    assert!(md.contains("Recorded purges were ignored"), "{md}");
}

/// Imported purge lines are stored as `imported` by whoever imports them, whatever method,
/// author or source they claim; the trace shows them so, with the claim beside it. An export
/// carries the claims on, and a second import still cannot make them true.
#[test]
fn imported_purges_stay_imported_whatever_they_claim() {
    let env = example();
    let forged = r#"{"v":1,"type":"purge","builder":"ci-1","mount":"/root/.cache/pip","at":"2026-11-03T15:00:00Z","source":"mark-purged","method":"executor","author":"security-team@vault","recorded_at":"2026-11-03T15:00:01Z"}"#;
    let file = env.write("forged.jsonl", &format!("{forged}\n"));
    ok(env
        .cmd()
        .args(["import", "--purges", file.to_str().unwrap()]));
    let doc = trace_json(&env, &[]);
    let p = &doc["purges"][0];
    assert_eq!(p["method"], "imported", "{doc:#}");
    assert!(p["author"].as_str().unwrap().starts_with(&me()), "{p}");
    assert_eq!(p["claimed"]["method"], "executor");
    assert_eq!(p["claimed"]["author"], "security-team@vault");
    assert_eq!(p["incident"], serde_json::Value::Null);
    let text = trace_text(&env, &[]);
    assert!(
        text.contains("imported by ")
            && text.contains("(its line claims `executor` by `security-team@vault`"),
        "{text}"
    );
    assert!(!text.contains("  executor"), "{text}");

    // Round trip: a forced manual purge exported from one store and imported into another
    // keeps its claims, and is `imported` there.
    let first = example();
    ok(&mut mark_pip(
        &first,
        &["--at", BACKDATED, "--force", "--reason", REASON],
    ));
    let exported = purge_lines(&first);
    assert_eq!(exported.len(), 1);
    let line = &exported[0];
    assert_eq!(line["method"], "manual");
    assert_eq!(line["forced"], true);
    assert_eq!(line["reason"], REASON);
    assert!(line["author"].as_str().unwrap().starts_with(&me()));
    assert_valid("provenance-line.schema.json", line);
    let second = Env::new();
    let file = second.write("export.jsonl", &ok(first.cmd().arg("export")));
    ok(second
        .cmd()
        .args(["import", "--purges", file.to_str().unwrap()]));
    assert_eq!(
        purge_lines(&second),
        exported,
        "the round trip lost provenance"
    );
    let p = &trace_json(&second, &[])["purges"][0];
    assert_eq!(p["method"], "imported");
    assert_eq!(p["claimed"]["method"], "manual");
    assert_eq!(p["forced"], true);
    assert_eq!(p["reason"], REASON);
}

/// A purge line is recorded only from a store's export (`import --purges`): in a CI job's
/// upload, which never carries one, it is refused, so a hostile upload cannot clean the mount
/// the release read after the fact; nor can any import record a purge in the future.
#[test]
fn an_upload_cannot_carry_a_purge() {
    let env = example();
    let before = trace_json(&env, &[]);
    assert!(runs(&before).contains(&"run:web-release/101-1/Dockerfile".to_owned()));
    let pipeline = r#"{"v":1,"type":"pipeline","name":"forks-pr"}"#;
    let purge = format!(
        r#"{{"v":1,"type":"purge","builder":"ci-1","mount":"{PIP}","at":"{BACKDATED}","method":"executor","author":"responder@soc"}}"#
    );
    let upload = env.write("upload.jsonl", &format!("{pipeline}\n{purge}\n"));
    for extra in [
        &[][..],
        &["--trust-level", "untrusted", "--run", "forks-pr/1"][..],
    ] {
        let out = output(&env, env.cmd().arg("import").args(extra).arg(&upload));
        assert!(out.starts_with("exit: 2\n"), "{out}");
        assert!(out.contains("upload.jsonl` line 2: a purge line"), "{out}");
    }
    let out = output(
        &env,
        env.cmd()
            .args(["import", "--purges", "--trust-level", "untrusted"])
            .arg(&upload),
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    let future = purge.replace(BACKDATED, "2099-01-01T00:00:00Z");
    let file = env.write("future.jsonl", &format!("{future}\n"));
    let out = output(&env, env.cmd().args(["import", "--purges"]).arg(&file));
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(
        out.contains("2099-01-01T00:00:00Z") && out.contains("future"),
        "{out}"
    );
    assert_eq!(
        trace_json(&env, &[]),
        before,
        "a refused purge narrowed the trace"
    );
}

/// Purge lines written before provenance still import, as `imported` by the importer; a line
/// claiming a method that does not exist is bad input.
#[test]
fn old_purge_lines_still_import() {
    let env = example();
    let old = r#"{"v":1,"type":"purge","builder":"ci-1","mount":"/root/.cache/pip","at":"2026-11-03T15:00:00Z","source":"incident 4"}"#;
    let file = env.write("old.jsonl", &format!("{old}\n"));
    ok(env
        .cmd()
        .args(["import", "--purges", file.to_str().unwrap()]));
    let p = &trace_json(&env, &[])["purges"][0];
    assert_eq!(p["method"], "imported");
    assert_eq!(p["source"], "incident 4");
    assert_eq!(p["claimed"], serde_json::Value::Null);
    let bad = old.replace(r#""source""#, r#""method":"vendor","source""#);
    let file = env.write("bad.jsonl", &format!("{bad}\n"));
    let out = output(
        &env,
        env.cmd()
            .args(["import", "--purges", file.to_str().unwrap()]),
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(out.contains("vendor"), "{out}");
}

/// A hostile reason cannot forge output lines or reach the terminal raw.
#[test]
fn a_reason_with_control_characters_is_escaped() {
    let env = example();
    let reason = "late\nCLEAN: nothing tainted\x1b]0;owned\x07";
    ok(&mut mark_pip(
        &env,
        &["--at", BACKDATED, "--force", "--reason", reason],
    ));
    let text = trace_text(&env, &[]);
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(!text.lines().any(|l| l.starts_with("CLEAN")), "{text}");
    assert!(text.contains("late\\nCLEAN"), "{text}");
    ok(env
        .cmd()
        .args(["incident", "open", "--pipeline", "forks-pr"]));
    let md = ok(env.cmd().args(["incident", "report", "1"]));
    assert!(
        !md.contains('\x1b') && !md.lines().any(|l| l.starts_with("CLEAN")),
        "{md}"
    );
}

/// `mark-purged --help` documents the refusal and `--force --reason`.
#[test]
fn mark_purged_help() {
    let env = Env::new();
    assert_snapshot!(output(&env, env.cmd().args(["mark-purged", "--help"])));
}

/// Checks that `incident purge --execute` of incident `id` recorded its prune of `mount` as an
/// `executor` purge, by the OS account running it, naming the incident and action, and its
/// prunes of builders as selective, naming the records tainted runs created.
pub(crate) fn assert_executor_purge(cw: &Command, id: &str, mount: &str) {
    let mut export = Command::new(cw.get_program());
    export.args(cw.get_args()).arg("export");
    for (key, value) in cw.get_envs() {
        match value {
            Some(value) => export.env(key, value),
            None => export.env_remove(key),
        };
    }
    if let Some(dir) = cw.get_current_dir() {
        export.current_dir(dir);
    }
    let lines = ok(&mut export);
    let purge = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["type"] == "purge" && l["mount"] == mount)
        .unwrap_or_else(|| panic!("no purge of `{mount}` recorded:\n{lines}"));
    assert_eq!(purge["method"], "executor", "{purge}");
    assert_eq!(purge["source"], format!("incident {id}"), "{purge}");
    assert!(
        purge["author"].as_str().unwrap().starts_with(&me()),
        "{purge}"
    );
    assert!(purge["recorded_at"].is_string(), "{purge}");
    assert_eq!(purge.get("forced"), None, "{purge}");
    // The incident's prunes of builders (without `--full-prune`) left their cache mounts to
    // the mount purges: recorded as cleaning build records only.
    let source = format!("incident {id}");
    let builders: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "purge" && l["mount"].is_null() && l["source"] == source)
        .collect();
    assert!(!builders.is_empty(), "no builder prune recorded:\n{lines}");
    for builder in builders {
        assert_eq!(builder["records_only"], true, "{builder}");
        // What it pruned: the records tainted runs made (and those used since).
        let named = builder["selective"]["records"].as_array();
        assert!(named.is_some_and(|n| !n.is_empty()), "{builder}");
    }
}

/// A purge of a builder or mount the store never recorded is refused (exit 2) with the closest
/// recorded names, and nothing is written.
#[test]
fn mark_purged_refuses_unknown_names() {
    let env = example();
    let before = purge_lines(&env);
    for (args, says) in [
        (
            ["--builder", "nope", "--mount", "/x"].as_slice(),
            "error: no builder `nope` in the store",
        ),
        (
            ["--builder", "ci-1x"].as_slice(),
            "error: no builder `ci-1x` in the store; did you mean `ci-1`?",
        ),
        (
            ["--builder", "ci-1", "--mount", "/root/.cache/pipp"].as_slice(),
            "error: no mount `/root/.cache/pipp` on builder `ci-1` in the store; did you mean \
             `/root/.cache/pip`?",
        ),
    ] {
        let out = output(&env, env.cmd().arg("mark-purged").args(args));
        assert!(out.starts_with("exit: 2\n"), "{args:?}: {out}");
        assert!(
            out.contains(&format!("--- stderr\n{says}\n")),
            "{args:?}: {out}"
        );
    }
    assert_eq!(purge_lines(&env), before);
    ok(&mut mark_pip(&env, &[]));
    assert_eq!(purge_lines(&env).len(), before.len() + 1);
}

/// An imported builder purge keeps whether it pruned build records only. A line written before
/// that was kept, of a prune an incident made, is taken as records-only (an incident's prune
/// leaves cache mounts unless asked not to), so it cleans no mount in a trace; one recorded by
/// hand is a whole prune. A mount purge line cannot claim it.
#[test]
fn imported_builder_purges_keep_or_take_whether_they_pruned_build_records_only() {
    let env = example();
    let at = |minute: u32| format!("2026-11-03T15:{minute:02}:00Z");
    let lines = [
        format!(
            r#"{{"v":1,"type":"purge","builder":"ci-1","at":"{}","source":"incident 4","method":"executor"}}"#,
            at(1)
        ),
        format!(
            r#"{{"v":1,"type":"purge","builder":"ci-1","at":"{}","method":"manual"}}"#,
            at(2)
        ),
        format!(
            r#"{{"v":1,"type":"purge","builder":"ci-1","at":"{}","method":"executor","records_only":false}}"#,
            at(3)
        ),
    ];
    let file = env.write("purges.jsonl", &lines.join("\n"));
    ok(env.cmd().args(["import", "--purges"]).arg(&file));
    let kept: Vec<(String, serde_json::Value)> = purge_lines(&env)
        .iter()
        .filter(|l| l["mount"].is_null())
        .map(|l| {
            (
                l["at"].as_str().unwrap().to_owned(),
                l["records_only"].clone(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [
            (at(1), serde_json::json!(true)),
            (at(2), serde_json::json!(false)),
            (at(3), serde_json::json!(false)),
        ]
    );
    let bad = env.write(
        "bad.jsonl",
        &format!(
            r#"{{"v":1,"type":"purge","builder":"ci-1","mount":"/root/.cache/pip","at":"{}","records_only":true}}"#,
            at(4)
        ),
    );
    let out = output(&env, env.cmd().args(["import", "--purges"]).arg(&bad));
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(out.contains("records_only"), "{out}");
    assert_eq!(purge_lines(&env).len(), 3);
}

/// `mark-purged --builder B --records-only` records a prune of build records only, which
/// cleans none of the builder's mounts; it does not go with `--mount`.
#[test]
fn mark_purged_records_a_prune_of_build_records_only() {
    let env = example();
    let out = output(
        &env,
        env.cmd().args([
            "mark-purged",
            "--builder",
            "ci-1",
            "--records-only",
            "--at",
            "2026-11-20T00:00:00Z",
        ]),
    );
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(
        out.contains("build records (not cache mounts) of builder `ci-1`"),
        "{out}"
    );
    let lines = purge_lines(&env);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["records_only"], true, "{lines:?}");
    let refused = output(
        &env,
        env.cmd().args([
            "mark-purged",
            "--builder",
            "ci-1",
            "--mount",
            "/root/.cache/pip",
            "--records-only",
        ]),
    );
    assert!(refused.starts_with("exit: 2\n"), "{refused}");
    assert_eq!(purge_lines(&env).len(), 1);
}

/// A selective prune line (an incident's prune without `--full-prune`, exported) cleans the
/// builder only of the writers whose records it named or that began after its `since`: traced
/// from a pipeline whose record it left, a later build without record evidence is tainted;
/// from one whose record it named, it is not. The line survives an export and a new import
/// unchanged, and one that contradicts itself is refused, nothing written.
#[test]
fn selective_prunes_clean_only_the_writers_whose_records_they_removed() {
    let run = |pipeline: &str, start: &str, finish: &str, created: Option<&str>| {
        let records = created.map_or(String::new(), |id| {
            format!(
                r#","records":{{"created":[{{"id":"{id}","type":"regular","description":"[2/2] RUN make"}}],"reused":[]}}"#
            )
        });
        format!(
            r#"{{"v":1,"type":"run","pipeline":"{pipeline}","run":"1","step":"build","builder":"b","started_at":"2026-11-02T{start}:00Z","finished_at":"2026-11-02T{finish}:00Z"{records}}}"#
        )
    };
    let selective = r#"{"v":1,"type":"purge","builder":"b","at":"2026-11-02T11:00:00Z","source":"incident 3","method":"executor","records_only":true,"selective":{"records":["r-evil","r-unknown"],"since":"2026-11-02T10:30:00Z"}}"#;
    // Each writer alone on the builder with the prune and the later build: a tainted build
    // without record evidence would be a writer too.
    let writers = [
        ("evil", run("evil", "09:00", "09:10", Some("r-evil")), false),
        ("late", run("late", "10:40", "10:50", None), false),
        ("sly", run("sly", "09:20", "09:30", Some("r-sly")), true),
        ("early", run("early", "09:40", "09:50", None), true),
    ];
    let lines = |writer: &str, purge: &str| {
        [writer, purge, &run("legacy", "12:00", "12:10", None)].join("\n")
    };
    let traced = |env: &Env, pipeline: &str| {
        let out = ok(env
            .cmd()
            .args(["trace", "--pipeline", pipeline, "--format", "json"]));
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_valid("trace.schema.json", &doc);
        runs(&doc).contains(&"run:legacy/1/build".to_owned())
    };
    for (pipeline, writer, tainted) in &writers {
        let env = Env::new();
        let file = env.write("history.jsonl", &lines(writer, selective));
        // The import says which named records the store does not hold, and that they are
        // taken as left in place.
        let imported = output(&env, env.cmd().args(["import", "--purges"]).arg(&file));
        assert!(imported.starts_with("exit: 0\n"), "{imported}");
        let unknown = if *pipeline == "evil" {
            "names a record the store does not hold (`r-unknown`)"
        } else {
            "names 2 records the store does not hold (`r-evil`, `r-unknown`)"
        };
        assert!(imported.contains(unknown), "{pipeline}: {imported}");
        assert!(imported.contains("stay tainted"), "{imported}");
        assert_eq!(traced(&env, pipeline), *tainted, "{pipeline}");
        // Exported as imported (the record the store does not hold is not kept), and read
        // back the same.
        let exported = purge_lines(&env);
        assert_valid("provenance-line.schema.json", &exported[0]);
        assert_eq!(
            exported[0]["selective"],
            serde_json::json!({
                "records": if *pipeline == "evil" { vec!["r-evil"] } else { vec![] },
                "since": "2026-11-02T10:30:00Z",
                "skew_seconds": 300,
            }),
            "{pipeline}"
        );
        let again = Env::new();
        let file = again.write("export.jsonl", &ok(env.cmd().arg("export")));
        ok(again.cmd().args(["import", "--purges"]).arg(&file));
        assert_eq!(traced(&again, pipeline), *tainted, "{pipeline}");
        assert_eq!(
            purge_lines(&again)[0]["selective"],
            exported[0]["selective"]
        );
        if *pipeline == "evil" {
            let text = ok(env.cmd().args(["trace", "--pipeline", "evil"]));
            assert!(
                text.contains(
                    "builder b (1 named build record and build records used since \
                     2026-11-02T10:30:00Z, not cache mounts)"
                ),
                "{text}"
            );
        }
    }
    // An incident's records-only prune from a line that does not say what it removed cleans
    // no writer; a line that contradicts itself is refused.
    let bare = Env::new();
    let unsaid = selective.replace(
        r#","selective":{"records":["r-evil","r-unknown"],"since":"2026-11-02T10:30:00Z"}"#,
        "",
    );
    let file = bare.write("history.jsonl", &lines(&writers[0].1, &unsaid));
    ok(bare.cmd().args(["import", "--purges"]).arg(&file));
    assert!(traced(&bare, "evil"));
    for (bad, says) in [
        (
            selective.replace(r#""records_only":true"#, r#""records_only":false"#),
            "records_only is false",
        ),
        (
            selective
                .replace(r#""builder":"b","#, r#""builder":"b","mount":"/m","#)
                .replace(r#""records_only":true,"#, ""),
            "selective is for a prune of a builder",
        ),
        (
            selective.replace(r#""since":"#, r#""every_record":true,"since":"#),
            "not both",
        ),
        (
            selective.replace("2026-11-02T10:30:00Z", "yesterday"),
            "selective.since",
        ),
        (
            selective.replace(r#""since":"#, r#""skew_seconds":315360001,"since":"#),
            "`selective.skew_seconds` is 315360001",
        ),
    ] {
        let file = bare.write("bad.jsonl", &bad);
        let out = output(&bare, bare.cmd().args(["import", "--purges"]).arg(&file));
        assert!(out.starts_with("exit: 2\n"), "{bad}: {out}");
        assert!(out.contains(says), "{bad}: {out}");
    }
    assert_eq!(purge_lines(&bare).len(), 1);
}

/// `mark-purged --mount` names a mount in a namespace as `ls mounts` and `trace` do,
/// `NAMESPACE/ID`, and records the purge of that mount; its bare id, which no run used in the
/// default namespace, is refused as unknown rather than recorded as the purge of a mount that
/// does not exist.
#[test]
fn a_mount_in_a_namespace_is_marked_by_its_name() {
    let env = Env::new();
    crate::build::History::new()
        .run(
            crate::build::Run::new("a", 1)
                .builder("ci-1")
                .namespaced_mount("ns1", "go", "/go/pkg/mod"),
        )
        .import(&env);
    let bare = output(
        &env,
        env.cmd()
            .args(["mark-purged", "--builder", "ci-1", "--mount", "go"]),
    );
    assert!(bare.starts_with("exit: 2\n"), "{bare}");
    ok(env
        .cmd()
        .args(["mark-purged", "--builder", "ci-1", "--mount", "ns1/go"]));
    let purges = purge_lines(&env);
    assert_eq!(purges.len(), 1, "{purges:?}");
    assert_eq!(purges[0]["mount"], "go", "{purges:?}");
    assert_eq!(purges[0]["namespace"], "ns1", "{purges:?}");
    // Once a mount of the default namespace has that name too, the name is refused.
    crate::build::History::new()
        .run(
            crate::build::Run::new("b", 1)
                .builder("ci-1")
                .mount("ns1/go"),
        )
        .import_as(&env, "more.jsonl");
    let both = output(
        &env,
        env.cmd()
            .args(["mark-purged", "--builder", "ci-1", "--mount", "ns1/go"]),
    );
    assert!(
        both.starts_with("exit: 2\n") && both.contains("names two mounts"),
        "{both}"
    );
    assert_eq!(purge_lines(&env).len(), 1);
}
