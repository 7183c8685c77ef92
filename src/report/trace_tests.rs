//! `cachewarden trace` output in every format, over hand-built histories.

use serde_json::Value;

use super::trace::{Format, write, write_explain};
use crate::graph::mem::History;
use crate::graph::seeds::{RunSeed, Seeds};
use crate::graph::{Kind, Trace, TraceOptions, Via, trace};
use crate::model::Backend;
use crate::report::escape::{Term, needs_escape};
use crate::time::{Micros, parse_rfc3339};

const SCHEMA: &str = include_str!("../../schema/trace.schema.json");

/// 2026-03-01T00:00:00Z plus `minutes`.
fn t(minutes: i64) -> Micros {
    (1_772_323_200 + minutes * 60) * 1_000_000
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn seed_runs(keys: &[&str]) -> Seeds {
    Seeds {
        runs: keys.iter().map(|k| RunSeed::parse(k).unwrap()).collect(),
        ..Seeds::default()
    }
}

fn render(trace: &Trace, format: Format) -> String {
    let mut out = Vec::new();
    write(trace, format, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// `evil/1` writes a pip mount that `web/2` reads later.
fn mount_trace() -> Trace {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let pip = h.mount(b1, "/root/.cache/pip");
    let evil = h.run("evil", "1", t(10), t(20));
    h.on(evil, b1);
    h.with_records(evil);
    h.writes(evil, pip);
    let web = h.run("web", "2", t(30), t(40));
    h.on(web, b1);
    h.with_records(web);
    h.reads(web, pip);
    trace(&mut h, &seed_runs(&["evil/1"]), TraceOptions::default()).unwrap()
}

/// Every kind of entity: a cache that is also an image (inline cache), a gha cache, a
/// builder record, a mount, and a digest copied to a second repository.
fn rich_trace(ignore_time: bool) -> Trace {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let pip = h.mount(b1, "/root/.cache/pip");
    let record = h.record(b1, "r1", "regular", "[2/3] RUN make");
    let inline = h.manifest("reg.io/app", &digest('a'));
    h.tag(inline, "main");
    let copy = h.manifest("mirror.io/app", &digest('a'));
    let gha = h.artifact(Backend::Gha, "", "", "buildkit-app");
    let evil = h.run("evil", "1", t(10), t(20));
    h.on(evil, b1);
    h.with_records(evil);
    h.writes(evil, pip);
    h.creates(evil, record);
    h.produces(evil, inline);
    h.exports(evil, gha);
    let web = h.run("web", "1", t(30), t(40));
    h.on(web, b1);
    h.with_records(web);
    h.reuses(web, record);
    h.imports(web, inline);
    let api = h.run("api", "1", t(50), t(60));
    h.uses_base(api, copy);
    h.fail(api);
    let ci = h.run("ci", "1", t(0), t(5));
    h.imports(ci, gha);
    trace(
        &mut h,
        &seed_runs(&["evil/1"]),
        TraceOptions {
            ignore_time,
            ..TraceOptions::default()
        },
    )
    .unwrap()
}

/// The text report: the seeds, counts per kind, then each group with time and evidence.
#[test]
fn text_lists_counts_then_groups() {
    let text = render(&mount_trace(), Format::Text);
    let expected = "\
seeds: run:evil/1/build
blast radius: 2 runs, 0 cache refs, 1 mount, 1 builder, 0 images, 0 builder records

runs:
  2026-03-01T00:10:00Z  run:evil/1/build  seed
  2026-03-01T00:30:00Z  run:web/2/build   mount-read from mount:b1:/root/.cache/pip

mounts:
  2026-03-01T00:10:00Z  mount:b1:/root/.cache/pip  mount-write from run:evil/1/build

builders:
  2026-03-01T00:10:00Z  builder:b1  ran-on from run:evil/1/build
";
    assert_eq!(text, expected);
}

/// An empty blast radius is a result, and the text says so.
#[test]
fn empty_text_says_so() {
    let mut h = History::new();
    h.run("p", "1", t(0), t(1));
    let seeds = Seeds {
        pipelines: vec![crate::graph::seeds::PipelineSeed {
            name: "p".into(),
            window: crate::graph::seeds::Window {
                since: Some(t(10)),
                until: None,
            },
        }],
        ..Seeds::default()
    };
    let trace = trace(&mut h, &seeds, TraceOptions::default()).unwrap();
    assert_eq!(
        render(&trace, Format::Text),
        "seeds: none matched\nempty blast radius: no runs, caches, mounts or images are downstream of the seeds\n"
    );
    let json: Value = serde_json::from_str(&render(&trace, Format::Json)).unwrap();
    assert_eq!(json["runs"], Value::Array(Vec::new()));
}

/// A pipeline seed can select many runs: the header names a few and counts the rest.
#[test]
fn text_header_counts_many_seeds() {
    let mut h = History::new();
    for i in 1..=7 {
        h.run("p", &i.to_string(), t(i), t(i + 1));
    }
    let seeds = Seeds {
        pipelines: vec![crate::graph::seeds::PipelineSeed {
            name: "p".into(),
            window: crate::graph::seeds::Window::default(),
        }],
        ..Seeds::default()
    };
    let trace = trace(&mut h, &seeds, TraceOptions::default()).unwrap();
    let text = render(&trace, Format::Text);
    assert_eq!(
        text.lines().next(),
        Some(
            "seeds: run:p/1/build, run:p/2/build, run:p/3/build, run:p/4/build, run:p/5/build and 2 more"
        )
    );
    assert!(text.contains("blast radius: 7 runs,"), "{text}");
}

/// The JSON output validates against `schema/trace.schema.json`, in both modes.
#[test]
fn json_matches_the_schema() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    for ignore_time in [false, true] {
        let json: Value =
            serde_json::from_str(&render(&rich_trace(ignore_time), Format::Json)).unwrap();
        validate(&schema, &schema, &json, "$").unwrap();
        assert_eq!(json["ignore_time"], ignore_time);
    }
    let json: Value = serde_json::from_str(&render(&mount_trace(), Format::Json)).unwrap();
    validate(&schema, &schema, &json, "$").unwrap();
}

/// A trace in which a purge of the pip mount kept `web/2` out, and a prune of the builder
/// cleaned it too.
fn purged_trace(options: TraceOptions) -> Trace {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let pip = h.mount(b1, "/root/.cache/pip");
    let evil = h.run("evil", "1", t(10), t(20));
    h.on(evil, b1);
    h.with_records(evil);
    h.writes(evil, pip);
    h.purge(pip, t(25));
    let web = h.run("web", "2", t(30), t(40));
    h.on(web, b1);
    h.with_records(web);
    h.reads(web, pip);
    trace(&mut h, &seed_runs(&["evil/1"]), options).unwrap()
}

/// Every purge the trace applied is in the text and the JSON (valid against the schema) with
/// its method, author and what it kept out; `--ignore-purges` says so and lists none.
#[test]
fn applied_purges_are_listed_in_text_and_json() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let purged = purged_trace(TraceOptions::default());
    let json: Value = serde_json::from_str(&render(&purged, Format::Json)).unwrap();
    validate(&schema, &schema, &json, "$").unwrap();
    assert_eq!(json["ignore_purges"], false);
    let p = &json["purges"][0];
    assert_eq!(
        (&p["kind"], &p["mount"], &p["method"], &p["author"]),
        (
            &Value::from("mount"),
            &Value::from("/root/.cache/pip"),
            &Value::from("manual"),
            &Value::from("tester@host")
        )
    );
    assert_eq!(
        (&p["runs"], &p["kept_out"]),
        (&Value::from(1), &Value::from(1))
    );
    let text = render(&purged, Format::Text);
    assert!(text.contains("\npurges applied (1; "), "{text}");
    assert!(
        text.contains(
            "  2026-03-01T00:25:00Z  purge 1 of mount /root/.cache/pip on b1  manual by `tester@host`"
        ),
        "{text}"
    );
    let ignored = purged_trace(TraceOptions {
        ignore_purges: true,
        ..TraceOptions::default()
    });
    let json: Value = serde_json::from_str(&render(&ignored, Format::Json)).unwrap();
    validate(&schema, &schema, &json, "$").unwrap();
    assert_eq!(json["ignore_purges"], true);
    assert_eq!(json["purges"], Value::Array(Vec::new()));
    assert_eq!(json["runs"].as_array().unwrap().len(), 2);
    let text = render(&ignored, Format::Text);
    assert!(
        text.contains("blast radius (purges ignored): 2 runs"),
        "{text}"
    );
    assert!(!text.contains("purges applied"), "{text}");
}

/// Keys come in the documented order, entries sorted by taint time then name, and an
/// artifact that is both a cache and an image is in both lists.
#[test]
fn json_is_ordered_and_lists_dual_artifacts_twice() {
    let text = render(&rich_trace(false), Format::Json);
    let keys = [
        "schema_version",
        "ignore_time",
        "ignore_purges",
        "seeds",
        "purges",
        "runs",
        "cache_refs",
        "mounts",
        "builders",
        "images",
        "records",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| text.find(&format!("\n  \"{k}\"")).unwrap())
        .collect();
    assert!(positions.is_sorted(), "{text}");
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["schema_version"], 1);
    let names = |key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let inline = format!("reg.io/app@{}", digest('a'));
    let copy = format!("mirror.io/app@{}", digest('a'));
    assert_eq!(
        names("runs"),
        [
            "run:ci/1/build",
            "run:evil/1/build",
            "run:web/1/build",
            "run:api/1/build"
        ]
    );
    assert_eq!(
        names("cache_refs"),
        ["gha:buildkit-app".into(), copy.clone(), inline.clone()]
    );
    assert_eq!(names("images"), [copy.clone(), inline.clone()]);
    assert_eq!(names("records"), ["record:b1:r1"]);
    let web = &json["runs"][2];
    assert_eq!(web["via"]["kind"], "imported-digest");
    assert_eq!(web["via"]["from"], inline.as_str());
    assert_eq!(web["via"]["at"], "2026-03-01T00:40:00Z");
    assert_eq!(json["runs"][1]["via"]["from"], Value::Null);
    assert_eq!(json["runs"][0]["via"]["from"], "gha:buildkit-app");
    assert_eq!(json["seeds"][0]["kind"], "run");
}

/// The schema's enumerations are exactly the strings the code emits.
#[test]
fn schema_enumerations_match_the_code() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let defs = &schema["$defs"];
    let vias: Vec<String> = Via::ALL.iter().map(|v| v.as_str().to_owned()).collect();
    assert_eq!(strings(&defs["via"]["properties"]["kind"]["enum"]), vias);
    let seed_kinds: Vec<String> = Kind::ALL
        .iter()
        .filter(|&&k| k != Kind::Record)
        .map(|k| k.as_str().to_owned())
        .collect();
    assert_eq!(
        strings(&defs["seed"]["properties"]["kind"]["enum"]),
        seed_kinds
    );
    let backends = ["registry", "local-image", "gha", "local", "s3", "azblob"];
    assert!(backends.iter().all(|b| Backend::parse(b).is_some()));
    assert_eq!(
        strings(&defs["artifact"]["properties"]["backend"]["enum"]),
        backends
    );
}

/// Graphviz output: one node per entity with its time, seeds filled, edges labelled with
/// their evidence kind.
#[test]
fn dot_highlights_seeds_and_labels_edges() {
    let dot = render(&mount_trace(), Format::Dot);
    let expected = "\
digraph blast_radius {
  rankdir=LR;
  node [fontname=\"monospace\"];
  n0 [label=\"builder:b1\\n2026-03-01T00:10:00Z\" shape=component];
  n1 [label=\"mount:b1:/root/.cache/pip\\n2026-03-01T00:10:00Z\" shape=cylinder];
  n2 [label=\"run:evil/1/build\\n2026-03-01T00:10:00Z\" shape=box style=filled fillcolor=\"#f4a582\"];
  n3 [label=\"run:web/2/build\\n2026-03-01T00:30:00Z\" shape=box];
  n1 -> n3 [label=\"mount-read\"];
  n2 -> n0 [label=\"ran-on\"];
  n2 -> n1 [label=\"mount-write\"];
  n3 -> n0 [label=\"ran-on\"];
}
";
    assert_eq!(dot, expected);
}

/// `pipeline/1` runs on a builder named `builder` and writes a mount `mount` that `web/2`
/// reads later.
fn named_trace(pipeline: &str, builder: &str, mount: &str) -> Trace {
    let mut h = History::new();
    let b1 = h.builder(builder);
    let cache = h.mount(b1, mount);
    let evil = h.run(pipeline, "1", t(10), t(20));
    h.on(evil, b1);
    h.writes(evil, cache);
    let web = h.run("web", "2", t(30), t(40));
    h.reads(web, cache);
    let seed = format!("{pipeline}/1");
    trace(&mut h, &seed_runs(&[&seed]), TraceOptions::default()).unwrap()
}

/// The DOT text with every quoted string emptied, and the strings as Graphviz's lexer reads
/// them: `\"` is a quote, any other backslash is kept with the character after it, and a
/// string ends at the first other `"`.
fn dot_strings(dot: &str) -> (String, Vec<String>) {
    let mut skeleton = String::new();
    let mut strings = Vec::new();
    let mut chars = dot.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            skeleton.push(c);
            continue;
        }
        skeleton.push_str("\"\"");
        let mut string = String::new();
        loop {
            match chars.next().expect("a string is closed") {
                '"' => break,
                '\\' => match chars.next().expect("a string is closed") {
                    '"' => string.push('"'),
                    c => {
                        string.push('\\');
                        string.push(c);
                    }
                },
                '\n' => panic!("a line break inside a string: {dot}"),
                c => string.push(c),
            }
        }
        strings.push(string);
    }
    (skeleton, strings)
}

/// The lines of a label as Graphviz draws it: `\n`, `\l` and `\r` end a line, and any
/// other escape is the character after the backslash.
fn drawn(label: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut chars = label.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n' | 'l' | 'r')) => {
                chars.next();
                lines.push(String::new());
            }
            ('\\', Some(escaped)) => {
                chars.next();
                lines.last_mut().unwrap().push(escaped);
            }
            (c, _) => lines.last_mut().unwrap().push(c),
        }
    }
    lines
}

/// Hostile names in Graphviz output: no control, bidi or invisible character is written,
/// quotes and backslashes neither end a string nor forge an escape, the file has the structure
/// of the same trace with plain names, and each label draws its name as the text output shows
/// it.
#[test]
fn dot_shows_hostile_names_escaped() {
    let pipeline = "evil\u{200b}\u{202e}";
    let builder = "b1\"];\n  n9 [label=\"\x1b]0;pwned\x07\r\u{9b}31m\u{e0041}\u{2028}\\N\\";
    let mount = "/root/.cache/\u{feff}pip\\\"\u{2066}\u{ad}";
    let dot = render(&named_trace(pipeline, builder, mount), Format::Dot);
    assert!(
        !dot.chars()
            .any(|c| c != '\n' && c != '\\' && needs_escape(c)),
        "{dot:?}"
    );
    let (skeleton, strings) = dot_strings(&dot);
    let plain = render(&named_trace("evil", "b1", "/root/.cache/pip"), Format::Dot);
    assert_eq!(skeleton, dot_strings(&plain).0);
    let names: Vec<String> = strings
        .iter()
        .filter(|s| s.contains("\\n2026-"))
        .map(|label| drawn(label).swap_remove(0))
        .collect();
    let expected: Vec<String> = [
        format!("builder:{builder}"),
        format!("mount:{builder}:{mount}"),
        format!("run:{pipeline}/1/build"),
        "run:web/2/build".to_owned(),
    ]
    .iter()
    .map(|name| Term(name).to_string())
    .collect();
    assert_eq!(names, expected, "{dot}");
}

/// `--explain` prints the chain one hop a line, the seed first.
#[test]
fn explain_prints_one_hop_per_line() {
    let trace = mount_trace();
    let hops = trace.explain("web/2/build").unwrap();
    let mut out = Vec::new();
    write_explain(&hops, &mut out).unwrap();
    let expected = "\
2026-03-01T00:10:00Z  seed         run:evil/1/build
2026-03-01T00:10:00Z  mount-write  run:evil/1/build -> mount:b1:/root/.cache/pip
2026-03-01T00:30:00Z  mount-read   mount:b1:/root/.cache/pip -> run:web/2/build
";
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

/// Checks `value` against the subset of JSON Schema 2020-12 the trace schema uses; any other
/// keyword fails, so the schema cannot silently rely on something unchecked.
fn validate(schema: &Value, root: &Value, value: &Value, path: &str) -> Result<(), String> {
    let rules = schema
        .as_object()
        .ok_or_else(|| format!("{path}: schema is not an object"))?;
    for (keyword, rule) in rules {
        match keyword.as_str() {
            "$schema" | "$id" | "title" | "description" | "$defs" => {}
            "$ref" => {
                let name = rule
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                    .ok_or_else(|| format!("{path}: unsupported $ref {rule}"))?;
                validate(&root["$defs"][name], root, value, path)?;
            }
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => return Err(format!("{path}: bad type rule")),
                };
                let fits = |t: &str| match t {
                    "object" => value.is_object(),
                    "array" => value.is_array(),
                    "string" => value.is_string(),
                    "boolean" => value.is_boolean(),
                    "null" => value.is_null(),
                    "integer" => value.is_i64() || value.is_u64(),
                    "number" => value.is_number(),
                    _ => false,
                };
                if !types.iter().any(|t| fits(t)) {
                    return Err(format!("{path}: {value} is not {types:?}"));
                }
            }
            "const" if value != rule => return Err(format!("{path}: {value} is not {rule}")),
            "const" => {}
            "enum" => {
                if !rule
                    .as_array()
                    .is_some_and(|options| options.contains(value))
                {
                    return Err(format!("{path}: {value} is not one of {rule}"));
                }
            }
            "format" => {
                if rule == "date-time"
                    && value
                        .as_str()
                        .is_some_and(|s| parse_rfc3339(s, path).is_err())
                {
                    return Err(format!("{path}: {value} is not a date-time"));
                }
            }
            "required" => {
                for key in rule
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if value.as_object().is_some_and(|o| !o.contains_key(key)) {
                        return Err(format!("{path}: missing `{key}`"));
                    }
                }
            }
            "additionalProperties" => {
                if rule == false
                    && let Some(object) = value.as_object()
                {
                    for key in object.keys() {
                        if schema["properties"].get(key).is_none() {
                            return Err(format!("{path}: unexpected `{key}`"));
                        }
                    }
                }
            }
            "properties" => {
                let object = value.as_object();
                for (key, sub) in rule.as_object().into_iter().flatten() {
                    if let Some(v) = object.and_then(|o| o.get(key)) {
                        validate(sub, root, v, &format!("{path}.{key}"))?;
                    }
                }
            }
            "items" => {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    validate(rule, root, item, &format!("{path}[{i}]"))?;
                }
            }
            other => return Err(format!("{path}: unsupported keyword `{other}`")),
        }
    }
    Ok(())
}

/// The checker rejects what it should, so a passing validation means something.
#[test]
fn the_schema_checker_rejects_bad_documents() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let good: Value = serde_json::from_str(&render(&mount_trace(), Format::Json)).unwrap();
    let mut bad = Vec::new();
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("records");
    bad.push(v);
    let mut v = good.clone();
    v["runs"][0]["via"]["kind"] = "guess".into();
    bad.push(v);
    let mut v = good.clone();
    v["runs"][0]["tainted_at"] = "yesterday".into();
    bad.push(v);
    let mut v = good.clone();
    v["mounts"][0]["extra"] = 1.into();
    bad.push(v);
    let mut v = good;
    v["schema_version"] = 2.into();
    bad.push(v);
    for doc in bad {
        assert!(validate(&schema, &schema, &doc, "$").is_err(), "{doc}");
    }
}
