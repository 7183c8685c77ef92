//! The PostgreSQL test harness and the store's connection to PostgreSQL, against a real
//! server on loopback.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cachewarden::store::postgres::connect::{
    self, ConnectError, Location, PgUrl, Timeouts, classify_with,
};

use crate::harness::{PgCluster, require_postgres};

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The shared cluster starts, makes a database owned by a role that is no superuser, and
/// `psql` reaches it with the URL it hands out.
#[test]
fn a_database_is_reached_with_its_url() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let db = cluster.new_database();
    assert!(db.url.starts_with("postgresql://cw_owner_"), "{}", db.url);
    let out = cluster.psql_url(
        &db.url,
        "SELECT current_user || ' ' || current_database() || ' ' || \
         (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
    );
    assert_eq!(stdout(&out), format!("{} {} false", db.owner, db.name));
    // The owner may create tables in its database.
    stdout(&cluster.psql_url(&db.url, "CREATE TABLE t (x int)"));
    assert_ne!(cluster.database(), db.url, "each database is new");
}

/// Passwords are really checked over TCP: a wrong one is refused, and the superuser, which
/// has none, cannot log in over TCP at all.
#[test]
fn tcp_logins_need_the_password() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let db = cluster.new_database();
    let wrong = db.url.replace(&db.password, "wrong");
    let out = cluster.psql_url(&wrong, "SELECT 1");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let superuser = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let out = Command::new(cluster.program("psql"))
        .args(["-X", "-w", "-d", &superuser, "-c", "SELECT 1"])
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the superuser logged in over TCP");
}

/// A killed server refuses connections, and after a restart it serves what was committed
/// before the kill.
#[test]
fn a_killed_cluster_restarts_with_its_commits() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::start();
    let db = cluster.new_database();
    stdout(&cluster.psql_url(&db.url, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)"));
    let pid = cluster.postmaster_pid().expect("running");
    cluster.kill();
    assert!(!is_alive(pid), "the postmaster survived SIGKILL");
    assert!(!cluster.is_ready());
    assert!(!cluster.psql_url(&db.url, "SELECT 1").status.success());
    cluster.restart();
    assert_eq!(stdout(&cluster.psql_url(&db.url, "SELECT x FROM t")), "42");
    cluster.restart();
    assert_eq!(
        stdout(&cluster.psql_url(&db.url, "SELECT count(*) FROM t")),
        "1"
    );
}

/// A role made with `create_role` logs in with its password and is no superuser.
#[test]
fn created_roles_log_in_with_their_password() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let db = cluster.new_database();
    let role = format!("{}_hook", db.owner);
    cluster.create_role(&role, "hook pass'word");
    let url = format!(
        "postgresql://{role}:hook%20pass%27word@127.0.0.1:{}/{}",
        cluster.port(),
        db.name
    );
    assert_eq!(stdout(&cluster.psql_url(&url, "SELECT current_user")), role);
    let rights = cluster.psql(
        &db.name,
        &format!(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = '{role}'"
        ),
    );
    assert_eq!(rights, "f|f|f");
}

/// The test binary's death takes its PostgreSQL with it, even when it is killed and runs no
/// destructor: the postmaster is gone within seconds.
#[test]
fn a_killed_test_binary_leaves_no_server_running() {
    if !require_postgres() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "pg_harness::orphan_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("CACHEWARDEN_PG_ORPHAN_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (pid, dir) = loop {
        let line = lines
            .next()
            .expect("the child printed its postmaster")
            .unwrap();
        if let Some(rest) = line.strip_prefix("POSTMASTER ") {
            let (pid, dir) = rest.split_once(' ').unwrap();
            break (pid.parse::<u32>().unwrap(), dir.to_owned());
        }
    };
    assert!(is_alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive = is_alive(pid);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!alive, "postmaster {pid} outlived the killed test binary");
}

/// Run by [`a_killed_test_binary_leaves_no_server_running`] in a child test binary: starts a
/// cluster, says which postmaster it is, and waits to be killed.
#[test]
#[ignore = "run by a_killed_test_binary_leaves_no_server_running"]
fn orphan_child() {
    if std::env::var("CACHEWARDEN_PG_ORPHAN_CHILD").as_deref() != Ok("1") {
        return;
    }
    let cluster = PgCluster::start();
    println!(
        "POSTMASTER {} {}",
        cluster.postmaster_pid().unwrap(),
        cluster.dir().display()
    );
    std::thread::sleep(Duration::from_secs(120));
}

/// Whether `pid` runs (a zombie no one has reaped yet counts as gone).
fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

/// The URL without its password, with the password from `PGPASSWORD`.
fn without_password(db: &crate::harness::PgDatabase) -> String {
    db.url.replace(&format!(":{}@", db.password), "@")
}

fn parse(url: &str, vars: &[(&str, String)]) -> PgUrl {
    let lookup = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    match classify_with(url, &lookup).unwrap() {
        Location::Postgres(url) => *url,
        other => panic!("{other:?}"),
    }
}

/// `connect` logs in with a password from the URL, from PGPASSWORD, and from a password
/// file at 0600, and sets the statement timeout per transaction.
#[test]
fn connect_finds_the_password_where_libpq_would() {
    use std::os::unix::fs::PermissionsExt;
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let db = cluster.new_database();
    let timeouts = Timeouts::default();
    let home = tempfile::tempdir().unwrap();
    let home_var = home.path().to_str().unwrap().to_owned();
    let current_user = |url: &PgUrl| {
        let mut client = connect::connect(url, &timeouts).unwrap();
        let row = client.query_one("SELECT current_user::text", &[]).unwrap();
        row.get::<_, String>(0)
    };

    let from_url = parse(&db.url, &[("HOME", home_var.clone())]);
    assert_eq!(current_user(&from_url), db.owner);

    let bare = without_password(&db);
    assert!(!bare.contains(&db.password));
    let nothing = parse(&bare, &[("HOME", home_var.clone())]);
    assert!(!nothing.has_password());
    let Err(err) = connect::connect(&nothing, &timeouts) else {
        panic!("connected without a password");
    };
    assert!(!err.unreachable(), "{err}");
    assert!(err.to_string().contains("none was found"), "{err}");
    let wrong = parse(&bare, &[("PGPASSWORD", "wrong".into())]);
    let Err(err) = connect::connect(&wrong, &timeouts) else {
        panic!("connected with a wrong password");
    };
    assert!(!err.unreachable(), "{err}");
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    // A closed port is unreachable.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!(
        "postgresql://u:p@127.0.0.1:{}/d",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let Err(err) = connect::connect(&parse(&closed_url, &[]), &timeouts) else {
        panic!("connected to a closed port");
    };
    assert!(err.unreachable(), "{err}");
    assert!(!err.to_string().contains(":p@"), "{err}");

    let from_env = parse(
        &bare,
        &[
            ("HOME", home_var.clone()),
            ("PGPASSWORD", db.password.clone()),
        ],
    );
    assert_eq!(current_user(&from_env), db.owner);

    let pgpass = home.path().join(".pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "127.0.0.1:{}:{}:{}:{}\n",
            db.port, db.name, db.owner, db.password
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let from_file = parse(&bare, &[("HOME", home_var.clone())]);
    assert_eq!(current_user(&from_file), db.owner);

    let mut client = connect::connect(&from_file, &timeouts).unwrap();
    let mut tx = connect::transaction(
        &mut client,
        &Timeouts {
            connect: timeouts.connect,
            statement: Duration::from_millis(200),
        },
    )
    .unwrap();
    let shown: String = tx.query_one("SHOW statement_timeout", &[]).unwrap().get(0);
    assert_eq!(shown, "200ms");
    let err = tx.batch_execute("SELECT pg_sleep(5)").unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("statement timeout")),
        "{err}"
    );
    drop(tx);
    // SET LOCAL ends with the transaction: nothing stays on the session for a pooler to leak.
    let shown: String = client
        .query_one("SHOW statement_timeout", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, "0");
}

/// A server that accepts the connection and never answers is given up on within the
/// connect timeout, with a message naming the redacted target, never the password.
#[test]
fn connect_gives_up_on_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Accept and hold every connection open, answering nothing.
        for stream in listener.incoming() {
            let _ = held_tx.send(stream);
        }
    });
    for sslmode in ["disable", "prefer"] {
        let url = parse(
            &format!("postgresql://hook:hunter2@127.0.0.1:{port}/store?sslmode={sslmode}"),
            &[],
        );
        let timeouts = Timeouts {
            connect: Duration::from_millis(700),
            statement: Duration::from_secs(1),
        };
        let started = Instant::now();
        let Err(err) = connect::connect(&url, &timeouts) else {
            panic!("connected to a silent server");
        };
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
        assert!(took >= Duration::from_millis(600), "took {took:?}");
        assert!(matches!(err, ConnectError::Timeout { .. }), "{err}");
        assert!(err.unreachable());
        let message = err.to_string();
        assert_eq!(
            message,
            format!(
                "cannot connect to `postgresql://hook@127.0.0.1:{port}/store`: no answer within 700ms"
            )
        );
    }
    assert!(held_rx.try_recv().is_ok(), "the connections were accepted");
}

/// sslmode is libpq's: `disable` is plain, `require` encrypts without checking the
/// certificate, `verify-ca` checks the chain but not the name, `verify-full` both; a foreign
/// authority or a certificate for another name is refused, as a server's refusal, not an
/// unreachable one.
#[test]
fn sslmode_encrypts_and_verifies_as_libpq_does() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::start();
    let ca = cluster.enable_tls(&["DNS:db.example"]);
    let other = PgCluster::start();
    let other_ca = other.enable_tls(&["DNS:db.example"]);
    drop(other);
    let db = cluster.new_database();
    let timeouts = Timeouts::default();
    let home = tempfile::tempdir().unwrap();
    let vars = [("HOME", home.path().to_str().unwrap().to_owned())];
    let encrypted = |query: &str| -> Result<bool, ConnectError> {
        let url = parse(&format!("{}?{query}", db.url), &vars);
        let mut client = connect::connect(&url, &timeouts)?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap();
        Ok(row.get(0))
    };
    let ca = ca.display();
    assert!(!encrypted("sslmode=disable").unwrap());
    assert!(encrypted("sslmode=prefer").unwrap());
    assert!(encrypted("sslmode=require").unwrap());
    // The certificate names db.example, not 127.0.0.1.
    assert!(encrypted(&format!("sslmode=verify-ca&sslrootcert={ca}")).unwrap());
    let err = encrypted(&format!("sslmode=verify-full&sslrootcert={ca}")).unwrap_err();
    assert!(!err.unreachable(), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    // Named as the certificate names it, at the same address.
    let named = db.url.replace("@127.0.0.1:", "@db.example:");
    let full = format!("{named}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}");
    let mut client = connect::connect(&parse(&full, &vars), &timeouts).unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0));
    let foreign = format!("sslmode=verify-ca&sslrootcert={}", other_ca.display());
    let err = encrypted(&foreign).unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // With a root file, `require` checks the chain as libpq does.
    let err = encrypted(&format!(
        "sslmode=require&sslrootcert={}",
        other_ca.display()
    ))
    .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}
