//! A NUL character (U+0000) in a recorded value: PostgreSQL's text cannot hold one, so both
//! stores refuse it the same way, as bad input naming where it was, with nothing written.
//! These tests run on both engines (the PostgreSQL rerun of the suite takes them).

use crate::common::{Env, digest, ok, output};

/// A store holding one run, and its export.
fn store_with_a_run(env: &Env) -> String {
    ok(env.cmd().args([
        "record",
        "--pipeline",
        "web",
        "--run",
        "0",
        "--builder",
        "ci-1",
        "--mount",
        "/root/.cache/pip",
    ]));
    ok(env.cmd().arg("export"))
}

/// An imported line with a NUL in a field exits 2 naming the line and the field, and stores
/// nothing of the file.
#[test]
fn an_imported_nul_is_refused_naming_line_and_field() {
    let env = Env::new();
    let before = store_with_a_run(&env);
    let file = env.write(
        "fleet.jsonl",
        &format!(
            "{}\n{}\n",
            r#"{"v":1,"type":"pipeline","name":"web"}"#,
            r#"{"v":1,"type":"run","pipeline":"web","run":"1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:05:00Z","commit":"abc\u0000def"}"#
        ),
    );
    let out = output(&env, env.cmd().arg("import").arg(&file));
    assert!(out.starts_with("exit: 2\n"), "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{out}");
    assert!(
        errors[0].contains("line 2") && errors[0].contains("`commit` holds a NUL"),
        "{out}"
    );
    assert_eq!(ok(env.cmd().arg("export")), before);
}

/// `record` reading a NUL from a Dockerfile (a cache mount's id) exits 2 naming the field,
/// and stores no run.
#[test]
fn a_recorded_nul_is_refused_naming_the_field() {
    let env = Env::new();
    let before = store_with_a_run(&env);
    let dockerfile = env.write(
        "Dockerfile",
        "FROM scratch\nRUN --mount=type=cache,id=pip\0x,target=/root/.cache/pip true\n",
    );
    let out = output(
        &env,
        env.cmd()
            .args([
                "record",
                "--pipeline",
                "web",
                "--run",
                "1",
                "--builder",
                "ci-1",
                "--cache-from",
                &format!("127.0.0.1:5000/web:cache@{}", digest('a')),
                "--dockerfile",
            ])
            .arg(&dockerfile),
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(out.contains("`mounts[0].id` holds a NUL"), "{out}");
    assert_eq!(ok(env.cmd().arg("export")), before);
}
