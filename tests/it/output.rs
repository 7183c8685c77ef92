//! Output that is safe whatever the store holds: names escaped in text and Markdown, run
//! names that stay unique, and limits on what is recorded.

use std::process::Command;

use crate::common::{Env, digest, ok, output};

/// A run line of the import format with the given pipeline, run id, step and mount ids.
fn run_line(pipeline: &str, run: &str, step: &str, cache: char, mounts: &[&str]) -> String {
    let mounts: Vec<serde_json::Value> = mounts
        .iter()
        .map(|id| serde_json::json!({"id": id}))
        .collect();
    serde_json::json!({
        "v": 1, "type": "run", "pipeline": pipeline, "run": run, "step": step,
        "builder": "ci-1",
        "started_at": "2026-03-01T10:00:00Z", "finished_at": "2026-03-01T10:05:00Z",
        "exported": [format!("127.0.0.1:5000/web/cache@{}", digest(cache))],
        "mounts": mounts,
    })
    .to_string()
}

/// Imports the lines into the environment's store.
fn import(env: &Env, lines: &[String]) {
    let file = env.write("in.jsonl", &(lines.join("\n") + "\n"));
    ok(env.cmd().arg("import").arg(&file));
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run cachewarden");
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `c` would reach the terminal raw where a name must be escaped: a control other than
/// a line's own newline, a bidi override, isolate or mark, or a character drawn as nothing.
fn raw(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(
            c,
            '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{feff}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// A pipeline name with a newline cannot forge a line of `trace` text output, and ANSI
/// escapes (clear screen, window title), DEL, C1 controls, bidi overrides and invisible
/// characters never reach the terminal: every entity is one line, its name shown with escapes
/// (a run name's control characters percent-encoded). Graphviz output escapes them too.
#[test]
fn trace_text_shows_hostile_names_escaped_one_a_line() {
    let env = Env::new();
    let forged = "evil\n  2026-03-01T10:00:00Z  run:web/1/build  CLEAN";
    let ansi = "\x1b[2J\x1b]0;pwned\x07\u{9b}31m\u{7f}\u{202e}\u{200b}\u{e0041}gpj";
    import(
        &env,
        &[run_line(forged, "1", "build", 'a', &[ansi, "back\\slash"])],
    );
    let out = stdout(env.cmd().args(["trace", "--builder", "ci-1"]));
    assert!(!out.chars().any(raw), "{out:?}");
    assert!(
        !out.lines()
            .any(|l| l.contains("CLEAN") && !l.contains("evil")),
        "{out}"
    );
    assert!(out.contains("run:evil%0A  2026"), "{out}");
    let shown = "\\x1b[2J\\x1b]0;pwned\\x07\\u{9b}31m\\x7f\\u{202e}\\u{200b}\\u{e0041}gpj";
    assert!(out.contains(shown), "{out}");
    assert!(out.contains("back\\\\slash"), "{out}");
    // One line per entity (a run, a cache ref, two mounts, a builder) after the seeds and
    // the counts, each group after a blank line and its heading.
    assert_eq!(out.lines().count(), 2 + 4 * 2 + 5, "{out}");
    // JSON keeps the value whole.
    let json = stdout(
        env.cmd()
            .args(["trace", "--builder", "ci-1", "--format", "json"]),
    );
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["runs"][0]["pipeline"], forged);
    let mounts: Vec<&str> = doc["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(&ansi), "{mounts:?}");
    // Graphviz labels show the name as the text does, each backslash doubled for Graphviz.
    let dot = stdout(
        env.cmd()
            .args(["trace", "--builder", "ci-1", "--format", "dot"]),
    );
    assert!(!dot.chars().any(raw), "{dot:?}");
    assert!(dot.contains(&shown.replace('\\', "\\\\")), "{dot}");

    // Every other text printer of store values: incident open, list, show, the dry run, and
    // warnings, on stdout and stderr alike.
    let title = format!("{forged}{ansi}");
    for args in [
        vec!["incident", "open", "--builder", "ci-1", "--title", &title],
        vec!["incident", "list"],
        vec!["incident", "show", "1"],
        vec!["incident", "purge", "1"],
        vec!["trace", "--pipeline", &title],
    ] {
        let out = env.cmd().args(&args).output().unwrap();
        for stream in [out.stdout, out.stderr] {
            let text = String::from_utf8(stream).unwrap();
            assert!(!text.chars().any(raw), "{args:?}: {text:?}");
            assert!(
                !text
                    .lines()
                    .any(|l| l.trim_start().starts_with("2026-03-01T10:00:00Z  run:web")),
                "{args:?}: forged line in {text}"
            );
        }
    }
}

/// `--format json` of `ls`, `trace`, `export` and `incident report` writes no C1 control,
/// bidi control or zero-width character raw: each is a `\uXXXX` escape, and the documents
/// decode to the names as recorded.
#[test]
fn json_outputs_escape_controls_bidi_and_invisible_characters() {
    let env = Env::new();
    let hostile = "web\u{9b}31m\u{202e}esaeler\u{2066}\u{200b}\u{e0041}";
    import(&env, &[run_line(hostile, "1", "build", 'a', &[hostile])]);
    ok(env
        .cmd()
        .args(["incident", "open", "--builder", "ci-1", "--title", hostile]));
    let escaped = "web\\u009b31m\\u202eesaeler\\u2066\\u200b\\udb40\\udc41";
    for args in [
        vec!["ls", "runs", "--format", "json"],
        vec!["ls", "pipelines", "--format", "json"],
        vec!["ls", "mounts", "--format", "json"],
        vec!["trace", "--builder", "ci-1", "--format", "json"],
        vec!["export"],
        vec!["incident", "report", "1", "--format", "json"],
        vec!["incident", "show", "1", "--format", "json"],
    ] {
        let out = stdout(env.cmd().args(&args));
        assert!(!out.chars().any(raw), "{args:?}: {out:?}");
        assert!(out.contains(escaped), "{args:?}: {out}");
        for doc in serde_json::Deserializer::from_str(&out).into_iter::<serde_json::Value>() {
            doc.unwrap_or_else(|err| panic!("{args:?}: {err}: {out}"));
        }
    }
    let doc: serde_json::Value = serde_json::from_str(&stdout(env.cmd().args([
        "trace",
        "--builder",
        "ci-1",
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(doc["runs"][0]["pipeline"], hostile);
}

/// Removes the code spans of a Markdown line, as CommonMark reads them.
fn outside_code_spans(line: &str) -> String {
    let mut out = String::new();
    let bytes: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        // A backslash-escaped character outside a span (`\``) opens nothing.
        if bytes[i] == '\\' && i + 1 < bytes.len() {
            out.extend(&bytes[i..i + 2]);
            i += 2;
        } else if bytes[i] == '`' {
            let mut n = 0;
            while i + n < bytes.len() && bytes[i + n] == '`' {
                n += 1;
            }
            // Find the closing run of exactly n backticks.
            let mut j = i + n;
            let mut closed = None;
            while j < bytes.len() {
                if bytes[j] == '`' {
                    let mut m = 0;
                    while j + m < bytes.len() && bytes[j + m] == '`' {
                        m += 1;
                    }
                    if m == n {
                        closed = Some(j + m);
                        break;
                    }
                    j += m;
                } else {
                    j += 1;
                }
            }
            match closed {
                Some(end) => {
                    out.push_str("CODE");
                    i = end;
                }
                None => {
                    out.extend(&bytes[i..i + n]);
                    i += n;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Unescaped `|` in a line: the cell separators of a GitHub table row.
fn cell_separators(line: &str) -> usize {
    let mut count = 0;
    let mut escaped = false;
    for c in line.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '|' if !escaped => count += 1,
            _ => escaped = false,
        }
    }
    count
}

/// In `incident report --format md`, names cannot break out of code spans, split table cells,
/// start headings or render as live links and images.
#[test]
fn markdown_report_holds_hostile_names_in_code_spans() {
    let env = Env::new();
    let hostile =
        "x`\n# Owned\n| a | b |\n[link](http://evil.example/) ![img](http://evil.example/i.png) ``";
    import(
        &env,
        &[
            run_line(hostile, "1", "build", 'a', &["m|`[x](http://e)"]),
            run_line("web", "2", "build`|", 'a', &[]),
            serde_json::json!({
                "v": 1, "type": "run", "pipeline": hostile, "run": "3", "step": "s",
                "started_at": "2026-03-01T10:00:00Z", "finished_at": "2026-03-01T10:05:00Z",
                "exported": [{"backend": "gha", "key": "k`\n## Key [l](http://evil.example/)"}],
            })
            .to_string(),
        ],
    );
    ok(env.cmd().args([
        "incident",
        "open",
        "--pipeline",
        hostile,
        "--title",
        "[t](http://evil.example/) # ![i](x)",
    ]));
    let md = stdout(
        env.cmd()
            .args(["incident", "report", "1", "--format", "md"]),
    );
    for line in md.lines() {
        let text = outside_code_spans(line);
        assert!(
            !text.contains("](") || text.contains("\\]\\("),
            "live link: {line}"
        );
        assert!(
            !text.contains("http://evil") || text.contains("http\\:"),
            "{line}"
        );
        if line.starts_with('#') {
            assert!(
                ["# Incident 1: ", "## ", "### "]
                    .iter()
                    .any(|h| line.starts_with(h)),
                "{line}"
            );
            assert!(!line.contains("Owned"), "{line}");
        }
        if line.starts_with("| ") {
            let columns = if md
                .lines()
                .skip_while(|l| *l != "## Actions")
                .any(|l| l == line)
            {
                6
            } else {
                4
            };
            assert_eq!(cell_separators(line), columns + 1, "split cell: {line}");
        }
    }
    assert!(
        md.contains(
            "# Incident 1: \\[t\\]\\(http\\:\\/\\/evil\\.example\\/\\) \\# \\!\\[i\\]\\(x\\)"
        ),
        "{md}"
    );
    assert!(!md.lines().any(|l| l.starts_with("# Owned")), "{md}");
}

/// A follow-up command in `incident report --format md` is a code span holding exactly the
/// command of the JSON report: a key's backslashes are not doubled, so the pasted command names
/// the recorded cache. A `--reason` with a control character is escaped once.
#[test]
fn markdown_report_shows_follow_up_commands_as_they_are() {
    let env = Env::new();
    import(
        &env,
        &[serde_json::json!({
            "v": 1, "type": "run", "pipeline": "p", "run": "1", "builder": "b",
            "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T01:00:00Z",
            "exported": [
                {"backend": "gha", "key": "buildkit-a\\b"},
                {"backend": "local", "key": "/srv/cache\\x"},
            ],
        })
        .to_string()],
    );
    ok(env.cmd().args(["incident", "open", "--pipeline", "p"]));
    ok(env
        .cmd()
        .args(["incident", "accept", "1", "1", "--reason", "a\nb"]));
    // Not clean (two follow-ups stay): exit 1, which is what this test expects of it.
    let verify = env
        .cmd()
        .args(["incident", "verify", "1"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(1));
    let json = stdout(
        env.cmd()
            .args(["incident", "report", "1", "--format", "json"]),
    );
    let doc: serde_json::Value = serde_json::from_str(&json).expect(&json);
    let commands: Vec<&str> = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["target"]["command"].as_str())
        .collect();
    assert_eq!(
        commands[0], r#"gh cache delete -- "buildkit-a\\b""#,
        "{json}"
    );
    let md = stdout(
        env.cmd()
            .args(["incident", "report", "1", "--format", "md"]),
    );
    for command in &commands {
        assert!(md.contains(&format!("`{command}`")), "{command}\n{md}");
    }
    assert!(md.contains("| `gha:buildkit-a\\b` |"), "{md}");
    assert!(md.contains(r"\: a\\nb"), "{md}");
    assert!(!md.contains(r"a\\\\nb"), "{md}");
}

/// A follow-up's sentence quotes the names it holds: a backtick in a mount id is escaped, so the
/// id cannot end its quotes and go on as the sentence of another follow-up on another builder.
#[test]
fn follow_up_sentences_quote_the_names_they_hold() {
    let env = Env::new();
    let forged = "pip` on `ci-prod` is under a namespace: nothing to prune. Cache mount `ns/x";
    import(
        &env,
        &[serde_json::json!({
            "v": 1, "type": "run", "pipeline": "evil", "run": "1", "step": "s",
            "builder": "ci-dev",
            "started_at": "2026-03-01T10:00:00Z", "finished_at": "2026-03-01T10:05:00Z",
            "mounts": [{"id": forged, "namespace": "ns"}],
        })
        .to_string()],
    );
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    let json = stdout(
        env.cmd()
            .args(["incident", "report", "1", "--format", "json"]),
    );
    let doc: serde_json::Value = serde_json::from_str(&json).expect(&json);
    let what: Vec<&str> = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["target"]["what"].as_str())
        .filter(|w| w.contains("under a namespace (BUILDKIT_CACHE_MOUNT_NS)"))
        .collect();
    assert_eq!(
        what,
        [
            "cache mount `ns/pip\\` on \\`ci-prod\\` is under a namespace: nothing to prune. \
             Cache mount \\`ns/x` on `ci-dev` is under a namespace (BUILDKIT_CACHE_MOUNT_NS): \
             prune by id its records, those described `with id \"ns/pip\\` on \\`ci-prod\\` \
             is under a namespace: nothing to prune. Cache mount \\`ns/x\"` (Docker 25 and \
             later) or at its target path, leaving other namespaces' records"
        ],
        "{json}"
    );
    // In Markdown the sentence's own quotes render as backticks, and the id's as a backslash
    // and a backtick.
    let md = stdout(
        env.cmd()
            .args(["incident", "report", "1", "--format", "md"]),
    );
    assert!(
        md.contains(r"cache mount \`ns\/pip\\\` on \\\`ci\-prod\\\` is under"),
        "{md}"
    );
}

/// Verification details name a hostile builder as every other message does: a backtick and a
/// backslash in it are escaped, so it cannot end the quotes it is in or pass for another name.
#[test]
fn verification_details_escape_builder_names() {
    let env = Env::new();
    let builder = "b`|\\x";
    ok(env.cmd().args([
        "record",
        "--pipeline",
        "evil",
        "--run",
        "1",
        "--builder",
        builder,
        "--mount",
        "pip",
    ]));
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    let verify = output(&env, env.cmd().args(["incident", "verify", "1"]));
    assert!(
        verify.contains("cannot tell how `b\\x60|\\\\x` names mounts"),
        "{verify}"
    );
    assert!(!verify.contains(builder), "{verify}");
}

/// Two runs that printed as one name (`run:web-release/200-1/ci/Dockerfile`) print as two,
/// each name seeds and explains only its own run, and an unencoded seed of the old form still
/// finds its run.
#[test]
fn run_names_with_slashes_stay_unique() {
    let env = Env::new();
    import(
        &env,
        &[
            run_line("web-release", "200-1", "ci/Dockerfile", 'a', &[]),
            run_line("web-release/200-1", "ci", "Dockerfile", 'b', &[]),
            run_line("acme/web", "7", "build", 'c', &[]),
            run_line("100%", "1", "build", 'd', &[]),
        ],
    );
    let names = |seed: &str| -> Vec<String> {
        let json = stdout(env.cmd().args(["trace", "--run", seed, "--format", "json"]));
        let doc: serde_json::Value = serde_json::from_str(&json).expect(&json);
        doc["seeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names("web-release/200-1/ci%2FDockerfile"),
        ["run:web-release/200-1/ci%2FDockerfile"]
    );
    assert_eq!(
        names("web-release%2F200-1/ci/Dockerfile"),
        ["run:web-release%2F200-1/ci/Dockerfile"]
    );
    assert_eq!(names("acme/web/7"), ["run:acme%2Fweb/7/build"]);
    assert_eq!(names("100%25/1"), ["run:100%25/1/build"]);
    // The JSON keeps each part whole.
    let json = stdout(env.cmd().args([
        "trace",
        "--run",
        "web-release%2F200-1/ci",
        "--format",
        "json",
    ]));
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let run = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "run:web-release%2F200-1/ci/Dockerfile")
        .expect(&json);
    assert_eq!(run["pipeline"], "web-release/200-1");
    assert_eq!(run["run"], "ci");
    assert_eq!(run["step"], "Dockerfile");
    // `--explain` takes the printed name.
    let explain = stdout(env.cmd().args([
        "trace",
        "--builder",
        "ci-1",
        "--explain",
        "run:web-release/200-1/ci%2FDockerfile",
    ]));
    assert!(
        explain.contains("run:web-release/200-1/ci%2FDockerfile")
            && !explain.contains("web-release%2F200-1"),
        "{explain}"
    );
}

/// `record` with a 100 KB mount id, or with 1,001 mounts, is refused: exit 2 naming the field
/// and the limit, and nothing is written (the store is not even created).
#[test]
fn record_over_a_limit_is_refused_and_writes_nothing() {
    let env = Env::new();
    let long = "m".repeat(100 * 1024);
    let record = |extra: &[String]| {
        let mut cmd = env.cmd();
        cmd.args(["record", "--run", "1", "--builder", "ci-1"])
            .args(extra);
        if !extra.contains(&"--pipeline".to_owned()) {
            cmd.args(["--pipeline", "p"]);
        }
        output(&env, &mut cmd)
    };
    let out = record(&["--mount".to_owned(), long.clone()]);
    assert!(
        out.starts_with("exit: 2\n"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(
        out.contains("`mounts[0]` is 102400 bytes, over the limit of 1024 bytes"),
        "{out}"
    );
    assert!(
        out.len() < 2000,
        "the value is not echoed: {} bytes",
        out.len()
    );
    let many: Vec<String> = (0..1001)
        .flat_map(|i| ["--mount".to_owned(), format!("/cache/{i}")])
        .collect();
    let out = record(&many);
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(
        out.contains("`mounts` has 1001 entries, over the limit of 1000"),
        "{out}"
    );
    let out = record(&["--pipeline".to_owned(), "p".repeat(1025)]);
    assert!(
        out.starts_with("exit: 2\n") && out.contains("`pipeline` is 1025 bytes"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(!env.db().exists(), "nothing is written");
}

/// `import` of a line with a 512 KB id, or a run with 1,001 references, is refused: exit 2
/// naming the line, and nothing of it is written; a trace afterwards is unharmed.
#[test]
fn import_over_a_limit_is_refused_naming_the_line() {
    let env = Env::new();
    let good = run_line("p", "1", "build", 'a', &["/ok"]);
    let long_id = run_line("p", "2", "build", 'a', &[&"x".repeat(512 << 10)]);
    let file = env.write("in.jsonl", &format!("{good}\n{long_id}\n"));
    let out = output(&env, env.cmd().arg("import").arg(&file));
    assert!(
        out.starts_with("exit: 2\n"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(
        out.contains("line 2") && out.contains("over the limit of 1024 bytes"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(!env.db().exists(), "nothing is written");

    let refs: Vec<String> = (0..1001)
        .map(|i| format!("127.0.0.1:5000/web/c{i}@{}", digest('b')))
        .collect();
    let many = serde_json::json!({
        "v": 1, "type": "run", "pipeline": "p", "run": "3",
        "started_at": "2026-03-01T10:00:00Z", "finished_at": "2026-03-01T10:05:00Z",
        "imported": refs,
    });
    let file = env.write("many.jsonl", &format!("{good}\n{many}\n"));
    let out = output(&env, env.cmd().arg("import").arg(&file));
    assert!(
        out.starts_with("exit: 2\n")
            && out.contains("line 2")
            && out.contains("`references` has 1001 entries, over the limit of 1000"),
        "{out}"
    );
    assert!(!env.db().exists(), "nothing is written");
}

/// An import line over 1 MiB is refused by its number without being held whole: a 64 MiB line
/// of JSON is refused after its first MiB.
#[test]
fn import_lines_over_a_mebibyte_are_refused_streamed() {
    let env = Env::new();
    let good = run_line("p", "1", "build", 'a', &[]);
    let huge = format!(
        "{{\"v\":1,\"type\":\"pipeline\",\"name\":\"{}\"}}",
        "x".repeat(64 << 20)
    );
    let file = env.write("in.jsonl", &format!("{good}\n{huge}\n"));
    drop(huge);
    let out = output(&env, env.cmd().arg("import").arg(&file));
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(
        out.contains("line 2: the line is over the limit of 1048576 bytes"),
        "{out}"
    );
    assert!(!env.db().exists(), "nothing is written");
}

/// `wrap` never fails a build over a limit: a Dockerfile with 1,001 cache mounts, one of them
/// with a 2 KB id, builds (exit 0); what fits is recorded, the run is flagged truncated with a
/// warning, and `trace` shows the flag in text and JSON.
#[test]
fn wrap_records_what_fits_and_flags_the_run_truncated() {
    let env = Env::new();
    let docker = env.fake_docker("exit 0\n");
    let mut mounts: Vec<String> = (0..1000)
        .map(|i| format!("--mount=type=cache,target=/c/{i}"))
        .collect();
    mounts.insert(
        3,
        format!("--mount=type=cache,id={},target=/long", "l".repeat(2048)),
    );
    env.write(
        "ctx/Dockerfile",
        &format!("FROM scratch\nRUN {} true\n", mounts.join(" ")),
    );
    let out = env
        .cmd()
        .args([
            "wrap",
            "--pipeline",
            "p",
            "--run",
            "1",
            "--builder",
            "ci-7",
            "--",
        ])
        .arg(&docker)
        .args(["build", "-t", "app", "ctx"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: recorded what fits and flagged the run truncated: `mounts[3]` is 2048 bytes, over the limit of 1024 bytes"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("cachewarden: recorded succeeded run `p/1"),
        "{stderr}"
    );
    let export = ok(env.cmd().arg("export"));
    let run: serde_json::Value = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["type"] == "run")
        .unwrap();
    assert_eq!(run["truncated"], true);
    assert_eq!(run["mounts"].as_array().unwrap().len(), 1000);
    // The flag travels with the run through export and import.
    let other = Env::new();
    let file = other.write("export.jsonl", &export);
    ok(other.cmd().arg("import").arg(&file));
    assert_eq!(ok(other.cmd().arg("export")), export);
    let text = ok(env.cmd().args(["trace", "--run", "p/1"]));
    assert!(
        text.lines().any(|l| l.contains("run:p/1/")
            && l.ends_with("[truncated: inputs over a limit were not recorded]")),
        "{text}"
    );
    let json = ok(env
        .cmd()
        .args(["trace", "--run", "p/1", "--format", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["runs"][0]["truncated"], true);
    ok(env.cmd().args(["incident", "open", "--run", "p/1"]));
    let md = ok(env
        .cmd()
        .args(["incident", "report", "1", "--format", "md"]));
    assert!(
        md.lines()
            .any(|l| l.contains("`run:p/1/") && l.contains("` (truncated) |")),
        "{md}"
    );
}

/// An incident opened with a run seed in the old, unencoded form (a pipeline name with `/`)
/// still re-traces its run: `verify` and the report work on it.
#[test]
fn incidents_with_unencoded_run_seeds_still_verify() {
    let env = Env::new();
    let line = serde_json::json!({
        "v": 1, "type": "run", "pipeline": "acme/web", "run": "7", "step": "build",
        "started_at": "2026-03-01T10:00:00Z", "finished_at": "2026-03-01T10:05:00Z",
        "exported": [{"backend": "gha", "key": "web-main"}],
    });
    import(&env, &[line.to_string()]);
    let opened = ok(env.cmd().args(["incident", "open", "--run", "acme/web/7"]));
    assert!(opened.contains("run:acme%2Fweb/7/build"), "{opened}");
    let verified = output(&env, env.cmd().args(["incident", "verify", "1"]));
    assert!(
        !verified.starts_with("exit: 2") && !verified.contains("no run"),
        "{verified}"
    );
    let report = ok(env
        .cmd()
        .args(["incident", "report", "1", "--format", "md"]));
    assert!(report.contains("`run:acme%2Fweb/7/build`"), "{report}");
}

/// `export -o` and `incident report -o` never overwrite the store they read, keep a symlink
/// and a FIFO at the target what they are (writing through them), leave a file of the user's
/// named like a temporary file alone, and name the path given (exit 2) when its directory is
/// missing.
#[test]
fn output_files_keep_what_is_at_the_target() {
    let env = Env::new();
    import(&env, &[run_line("web", "1", "build", 'a', &[])]);
    ok(env.cmd().args(["incident", "open", "--pipeline", "web"]));
    if env.store.is_none() {
        let before = std::fs::read(env.db()).unwrap();
        for target in ["store.db", "store.db-wal"] {
            let out = env.cmd().args(["export", "-o", target]).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !env.path().join(target).exists() {
                continue;
            }
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(
                stderr.starts_with(&format!("error: cannot write `{target}`: it is the store")),
                "{stderr}"
            );
        }
        assert_eq!(std::fs::read(env.db()).unwrap(), before);
    }
    env.write("x.partial", "mine");
    ok(env.cmd().args(["export", "-o", "x.jsonl"]));
    assert_eq!(
        std::fs::read_to_string(env.path().join("x.partial")).unwrap(),
        "mine"
    );
    let names: Vec<String> = std::fs::read_dir(env.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let real = env.write("real.md", "old");
    std::os::unix::fs::symlink(&real, env.path().join("link.md")).unwrap();
    ok(env
        .cmd()
        .args(["incident", "report", "1", "--format", "md", "-o", "link.md"]));
    assert!(
        std::fs::symlink_metadata(env.path().join("link.md"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&real)
            .unwrap()
            .starts_with("# Incident 1")
    );
    let fifo = env.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    ok(env.cmd().args(["export", "-o", "fifo"]));
    assert!(reader.join().unwrap().contains("\"type\":\"run\""));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    for args in [
        &["export", "-o", "no/such/x.jsonl"][..],
        &["incident", "report", "1", "-o", "no/such/x.jsonl"],
    ] {
        assert_eq!(
            output(&env, env.cmd().args(args)),
            "exit: 2\n--- stdout\n--- stderr\nerror: cannot write `no/such/x.jsonl`: No such file or directory (os error 2)\n"
        );
    }
}

/// Standard output that cannot be written (a full disk behind a redirection) is an output
/// that cannot be written: one line naming it, exit 2; a closed pipe ends quietly.
#[test]
fn a_full_standard_output_is_one_line_and_exit_2() {
    let env = Env::new();
    import(&env, &[run_line("p", "1", "s", 'a', &[])]);
    for args in [&["export"][..], &["trace", "--pipeline", "p"][..]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = env.cmd().args(args).stdout(full).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: cannot write `standard output`: "),
            "{stderr}"
        );
    }
}
