//! `import` into an SQLite path where no store is: the store is built beside the path and
//! put in place whole when the import ends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Env, building_files, generate_fleet, ok, sqlite_indexes};

fn db_arg(db: &Path) -> String {
    db.to_str().unwrap().to_owned()
}

/// A store an import builds where none was holds what importing into a store that was there
/// holds: the same export, the same trace, the same indexes; nothing is left beside it.
#[test]
fn an_import_where_no_store_was_gives_the_same_store() {
    let env = Env::new();
    let fleet = generate_fleet(&env, (400, 12, 4, 30), Some(7));
    let there = env.path().join("there.db");
    // An empty file is a store with no schema yet: imported into as it is.
    std::fs::write(&there, b"").unwrap();
    let built = env.path().join("new").join("built.db");
    for db in [&there, &built] {
        ok(env
            .cmd()
            .args(["--db", &db_arg(db), "import", "--batch-size", "97"])
            .arg(&fleet));
    }
    let export = |db: &PathBuf| ok(env.cmd().args(["--db", &db_arg(db), "export"]));
    assert_eq!(export(&built), export(&there));
    let trace = |db: &PathBuf| {
        ok(env.cmd().args([
            "--db",
            &db_arg(db),
            "trace",
            "--pipeline",
            "p3",
            "--format",
            "json",
        ]))
    };
    assert_eq!(trace(&built), trace(&there));
    assert_eq!(sqlite_indexes(&built), sqlite_indexes(&there));
    assert!(sqlite_indexes(&built).contains(&"events_by_target".to_owned()));
    assert!(building_files(built.parent().unwrap()).is_empty());
    // Recording goes on into it as into any store.
    ok(env
        .cmd()
        .args(["--db", &db_arg(&built), "import", "--batch-size", "97"])
        .arg(&fleet));
    assert_eq!(export(&built), export(&there));
}

/// A bad line keeps the batches before its own, as in a store that was there: the store is
/// put in place with them, indexed, and the import exits 2 naming the line.
#[test]
fn a_bad_line_puts_the_store_in_place_with_the_batches_before_it() {
    let env = Env::new();
    let good = |name: &str| format!("{{\"v\":1,\"type\":\"pipeline\",\"name\":\"{name}\"}}\n");
    let text = format!("{}{}{}{{\"v\":1,\n", good("a"), good("b"), good("c"));
    let file = env.write("in.jsonl", &text);
    let db = env.path().join("fleet.db");
    let out = env
        .cmd()
        .args(["--db", &db_arg(&db), "import", "--batch-size", "2"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 4"), "{stderr}");
    let export = ok(env.cmd().args(["--db", &db_arg(&db), "export"]));
    assert_eq!(export.lines().count(), 2, "{export}");
    assert!(
        export.contains("\"a\"") && export.contains("\"b\""),
        "{export}"
    );
    assert!(sqlite_indexes(&db).contains(&"artifacts_by_digest".to_owned()));
    assert!(building_files(env.path()).is_empty());
}

/// An import killed while it runs leaves no store at the path (only the file it was
/// building); the import run again builds the whole store, and names the file left.
#[test]
fn a_killed_import_leaves_no_store_and_the_rerun_completes() {
    let env = Env::new();
    let fleet = generate_fleet(&env, (300, 10, 4, 20), Some(3));
    let text = std::fs::read_to_string(&fleet).unwrap();
    let db = env.path().join("fleet.db");
    let mut child = env
        .cmd()
        .args(["--db", &db_arg(&db), "import", "--batch-size", "10", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Half the lines, then wait until batches are being written beside the path.
    let half: String = text.lines().take(150).map(|l| format!("{l}\n")).collect();
    stdin.write_all(half.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    loop {
        let written = building_files(env.path()).iter().any(|name| {
            let runs = rusqlite::Connection::open_with_flags(
                env.path().join(name),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|conn| conn.query_row("SELECT count(*) FROM runs", [], |r| r.get(0)));
            runs.is_ok_and(|n: i64| n > 0)
        });
        if written {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no batch written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(!db.exists(), "a half import was put in place");
    let left = building_files(env.path())
        .into_iter()
        .find(|name| !name.ends_with("-journal"))
        .unwrap();

    // The rerun names the file the killed import left, which it does not read.
    let rerun = env
        .cmd()
        .args(["--db", &db_arg(&db), "import"])
        .arg(&fleet)
        .output()
        .unwrap();
    assert!(rerun.status.success());
    let stderr = String::from_utf8(rerun.stderr).unwrap();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains(&left), "{stderr}");
    assert!(warnings[0].contains("left unfinished"), "{stderr}");
    let reference = env.path().join("reference.db");
    ok(env
        .cmd()
        .args(["--db", &db_arg(&reference), "import"])
        .arg(&fleet));
    let export = |db: &PathBuf| ok(env.cmd().args(["--db", &db_arg(db), "export"]));
    assert_eq!(export(&db), export(&reference));
}

/// `--batch-size` outside 1..=1,000,000 is a usage error (exit 2) naming the value, never a
/// panic or an allocation abort; the largest size imports as any other.
#[test]
fn a_batch_size_out_of_range_is_refused() {
    let env = Env::new();
    let fleet = generate_fleet(&env, (20, 2, 1, 3), Some(3));
    for size in ["0", "1000001", "1000000000", "9223372036854775807"] {
        let out = env
            .cmd()
            .args(["import", "--batch-size", size])
            .arg(&fleet)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{size}: {stderr}");
        assert!(
            stderr.starts_with(&format!(
                "error: invalid value '{size}' for '--batch-size <N>': {size} is not in 1..=1000000"
            )),
            "{stderr}"
        );
    }
    assert!(!env.db().exists());
    ok(env
        .cmd()
        .args(["import", "--batch-size", "1000000"])
        .arg(&fleet));
}
