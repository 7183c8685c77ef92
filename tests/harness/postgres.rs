//! A real PostgreSQL for the tests, from Debian's `postgresql` package.
//!
//! `initdb` runs as the `postgres` user (with `runuser`) into a private temporary directory
//! owned by that user; the server listens on a free ephemeral port on 127.0.0.1 and on a
//! socket in that directory, with `fsync` and `full_page_writes` off: a test cluster is thrown
//! away, never recovered from a power cut. `synchronous_commit` stays on, so a commit has been
//! written (to the kernel) before the client hears of it and survives the server being killed.
//! Local socket connections are trusted (the harness's own `psql`, as `postgres`); TCP
//! connections need a password checked with SCRAM, so the URLs handed to the code under test
//! really carry one and the superuser, which has none, cannot log in over TCP at all.
//!
//! Nothing may outlive the test binary, even one killed with SIGKILL, which runs no
//! destructor. The postmaster is therefore a direct child of the test process, started (as
//! `postgres`) with `PR_SET_PDEATHSIG` = SIGKILL set after the uid change, so the kernel kills
//! it when its parent goes; its backends notice the postmaster's death and exit on their own.
//! The "parent" of that rule is the *thread* that forked, and test threads end when their
//! test does, so every postmaster is spawned by one spawner thread that lives as long as the
//! process. A watchdog process would be the other way, but it can itself be killed, and
//! `pg_ctl start` daemonizes the postmaster away from us, which is why it is not used. A
//! private cluster stops and removes its directory on drop; the shared one does it in an
//! `atexit` handler, as statics are never dropped (a killed binary leaves only the directory).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Where Debian installs each PostgreSQL major version's programs.
const PG_LIB: &str = "/usr/lib/postgresql";
/// The account `initdb` and the server run as.
const PG_USER: &str = "postgres";
/// Runs a command as another user, as the package's own scripts do.
pub const RUNUSER: &str = "/usr/sbin/runuser";

/// The `bin` directory of the newest PostgreSQL installed, if any.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_LIB)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Checks that a PostgreSQL cluster can be started; see [`super::require_dockerd`].
pub fn require_postgres() -> bool {
    let bin = bin_dir().unwrap_or_else(|| Path::new(PG_LIB).join("<version>/bin"));
    let programs: Vec<String> = ["postgres", "initdb", "psql", "pg_isready"]
        .iter()
        .map(|p| bin.join(p).display().to_string())
        .chain([RUNUSER.to_owned()])
        .collect();
    let programs: Vec<&str> = programs.iter().map(String::as_str).collect();
    super::require("PostgreSQL (the `postgresql` package)", &programs, true)
}

/// A running PostgreSQL cluster in its own directory.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    postmaster: Mutex<Option<Child>>,
}

/// A database made by [`PgCluster::new_database`], owned by a role of its own.
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pub name: String,
    pub owner: String,
    pub password: String,
    /// `postgresql://OWNER:PASSWORD@127.0.0.1:PORT/NAME`.
    pub url: String,
    pub port: u16,
}

impl PgDatabase {
    /// The database's URL for `role` with `password`.
    pub fn url_as(&self, role: &str, password: &str) -> String {
        format!(
            "postgresql://{role}:{password}@127.0.0.1:{}/{}",
            self.port, self.name
        )
    }
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static NAMES: AtomicU32 = AtomicU32::new(0);

impl PgCluster {
    /// The cluster shared by every test of this process, started on first use.
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| {
            let cluster = PgCluster::start();
            extern "C" fn stop_shared() {
                if let Some(cluster) = SHARED.get() {
                    cluster.stop();
                    let _ = std::fs::remove_dir_all(&cluster.dir);
                }
            }
            // SAFETY: registers a plain function; it runs once, at exit.
            unsafe { libc::atexit(stop_shared) };
            cluster
        })
    }

    /// A private cluster, for tests that kill or restart it.
    pub fn start() -> PgCluster {
        let bin = bin_dir().expect("PostgreSQL is installed (see require_postgres)");
        let dir = tempfile::Builder::new()
            .prefix("cachewarden-pg-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        let (uid, gid) = pg_ids();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster dir");
        let sock = dir.join("sock");
        std::fs::create_dir(&sock).expect("socket dir");
        std::os::unix::fs::chown(&sock, Some(uid), Some(gid)).expect("chown the socket dir");
        let out = Command::new(RUNUSER)
            .args(["-u", PG_USER, "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                PG_USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = PgCluster {
            bin,
            dir,
            port: free_port(),
            postmaster: Mutex::new(None),
        };
        cluster.launch();
        cluster
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The cluster's directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The postmaster's process id, while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.postmaster.lock().unwrap().as_ref().map(Child::id)
    }

    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A fresh database with a unique name, owned by a new role that is no superuser and
    /// logs in with a password; its `postgresql://` URL.
    pub fn database(&self) -> String {
        self.new_database().url
    }

    /// [`Self::database`], with its parts.
    pub fn new_database(&self) -> PgDatabase {
        let n = NAMES.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("cw_{pid}_{n}");
        let owner = format!("cw_owner_{pid}_{n}");
        let password = format!("pw-{pid}-{n}-{:x}", rand_u64());
        self.create_role(&owner, &password);
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {} OWNER {}", ident(&name), ident(&owner)),
        );
        let url = format!(
            "postgresql://{owner}:{password}@127.0.0.1:{}/{name}",
            self.port
        );
        PgDatabase {
            name,
            owner,
            password,
            url,
            port: self.port,
        }
    }

    /// Creates a login role with `password`, and no superuser, database or role rights.
    pub fn create_role(&self, name: &str, password: &str) {
        self.psql(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}",
                ident(name),
                literal(password)
            ),
        );
    }

    /// Runs `sql` as whoever `url` names, over TCP, with no password but the URL's; psql's
    /// whole output, for tests of what that role may do.
    pub fn psql_url(&self, url: &str, sql: &str) -> std::process::Output {
        Command::new(self.program("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", "/nonexistent")
            .output()
            .expect("run psql")
    }

    /// Runs `sql` in database `db` as the superuser, over the socket; psql's whole output,
    /// its notices included.
    pub fn psql_output(&self, db: &str, sql: &str) -> std::process::Output {
        Command::new(RUNUSER)
            .args(["-u", PG_USER, "--"])
            .arg(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .expect("run psql")
    }

    /// Runs `sql` in database `db` as the superuser, over the socket; its unaligned,
    /// tuples-only output. Panics with psql's message when it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_output(db, sql);
        assert!(
            out.status.success(),
            "psql -c {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// The path of a program of this PostgreSQL (`psql`, `pg_dump`, ...).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Turns TLS on: a certificate authority and a server certificate for `names`
    /// (`DNS:db.example`, `IP:127.0.0.1`), made with `openssl`, then a configuration reload.
    /// Returns the authority's certificate, for `sslrootcert`. Plain connections still work.
    pub fn enable_tls(&self, names: &[&str]) -> PathBuf {
        let tls = self.dir.join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        let openssl = |args: &[&str]| {
            let out = Command::new(super::token::OPENSSL)
                .args(args)
                .current_dir(&tls)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"],
                &["-subj", "/CN=cachewarden test CA"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &["-keyout", "server.key", "-out", "server.csr"],
                &["-subj", "/CN=cachewarden test server"],
            ]
            .concat(),
        );
        std::fs::write(
            tls.join("server.ext"),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\n",
                names.join(",")
            ),
        )
        .expect("extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        let (uid, gid) = pg_ids();
        for file in ["server.crt", "server.key"] {
            let path = tls.join(file);
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod");
        }
        std::os::unix::fs::chown(&tls, Some(uid), Some(gid)).expect("chown");
        let cert = tls.join("server.crt");
        let key = tls.join("server.key");
        self.psql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET ssl_cert_file = {}",
                literal(&cert.display().to_string())
            ),
        );
        self.psql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET ssl_key_file = {}",
                literal(&key.display().to_string())
            ),
        );
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql("postgres", "SELECT pg_reload_conf()");
        let on = super::wait_until(Duration::from_secs(10), || {
            self.psql("postgres", "SHOW ssl") == "on"
        });
        assert!(
            on,
            "TLS did not come on: {}",
            super::log_tail(&self.log(), 2000)
        );
        tls.join("ca.crt")
    }

    /// Kills the postmaster with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&self) {
        if let Some(mut child) = self.postmaster.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server accepts connections.
    pub fn is_ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-t", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the server if it runs (a fast shutdown) and starts it again on the same port.
    pub fn restart(&self) {
        self.stop();
        self.launch();
    }

    /// A fast shutdown: SIGINT, then SIGKILL if it has not stopped within 10 s.
    fn stop(&self) {
        let Some(mut child) = self.postmaster.lock().unwrap().take() else {
            return;
        };
        // SAFETY: signals our own child, which has not been reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let stopped = super::wait_until(Duration::from_secs(10), || {
            child.try_wait().is_ok_and(|s| s.is_some())
        });
        if !stopped {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the postmaster and waits until it accepts connections. After a SIGKILL its old
    /// backends may hold the shared memory a little longer, so a refused start is retried.
    fn launch(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = self.spawn_postmaster();
            let ready = super::wait_until(Duration::from_secs(15), || {
                child.try_wait().is_ok_and(|s| s.is_none()) && self.is_ready()
            });
            if ready {
                *self.postmaster.lock().unwrap() = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            if std::time::Instant::now() >= deadline {
                panic!(
                    "PostgreSQL did not start: {}",
                    super::log_tail(&self.log(), 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn spawn_postmaster(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("postgres log");
        let (uid, gid) = pg_ids();
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-c", &format!("port={}", self.port)])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir().display()
            ))
            .args(["-c", "fsync=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300"])
            .args(["-c", "shared_buffers=32MB"])
            .args(["-c", "password_encryption=scram-sha-256"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .uid(uid)
            .gid(gid)
            .env("LC_ALL", "C");
        // The spawner thread is of this process, so this is the postmaster's parent.
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Runs after the uid change, which would clear it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have gone before the prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        spawn_from_spawner(cmd)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from the one thread that outlives every test, so a child's parent-death
/// signal fires only when the process ends.
fn spawn_from_spawner(cmd: Command) -> Child {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("postmaster-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // Never return: the postmasters' parent-death signal is tied to this thread.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((cmd, reply))
        .expect("spawner thread");
    answer
        .recv()
        .expect("spawner thread")
        .expect("spawn postgres")
}

fn pg_ids() -> (u32, u32) {
    let name = std::ffi::CString::new(PG_USER).unwrap();
    // SAFETY: getpwnam returns a pointer into static storage, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no `{PG_USER}` user: install the postgresql package"
    );
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// A port the kernel just handed out on 127.0.0.1 (free, barring a race with another binder).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// PgBouncer, from Debian's `pgbouncer` package.
pub const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// Checks that PgBouncer can be started in front of a cluster; see [`super::require_dockerd`].
pub fn require_pgbouncer() -> bool {
    require_postgres() && super::require("PgBouncer (the `pgbouncer` package)", &[PGBOUNCER], true)
}

/// PgBouncer in transaction pooling mode in front of a cluster, as a fleet would run it:
/// consecutive transactions of one client may run on different server connections, and each
/// server connection serves many clients, so anything a client left in its session (a
/// prepared statement, a `SET`, an advisory lock) is missing or leaks into someone else's.
///
/// It listens on a free port on 127.0.0.1 and reaches the cluster over its Unix socket, where
/// the cluster trusts local users; clients are trusted on loopback (`auth_type = trust`) when
/// their role is one of `users`. Every database of the cluster is served (`*`), with two
/// server connections per database and role (`default_pool_size = 2`), so concurrent clients
/// take turns on shared server connections. It runs as `postgres` with its files in a
/// directory of its own, dies with the test binary (parent-death signal, as the postmaster),
/// and is stopped on drop.
pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    cluster_port: u16,
    child: Mutex<Option<Child>>,
}

impl PgBouncer {
    pub fn start(cluster: &PgCluster, users: &[&str]) -> PgBouncer {
        let dir = tempfile::Builder::new()
            .prefix("cachewarden-pgbouncer-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        let (uid, gid) = pg_ids();
        let port = free_port();
        let userlist: String = users
            .iter()
            .map(|user| format!("\"{}\" \"\"\n", user.replace('"', "\"\"")))
            .collect();
        let ini = format!(
            "[databases]\n\
             * = host={socket} port={cluster_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = 2\n\
             max_client_conn = 500\n\
             logfile = {dir}/pgbouncer.log\n\
             ignore_startup_parameters = extra_float_digits\n",
            socket = cluster.socket_dir().display(),
            cluster_port = cluster.port(),
            dir = dir.display(),
        );
        for (name, text) in [("userlist.txt", userlist), ("pgbouncer.ini", ini)] {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("pgbouncer config");
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
        }
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the pgbouncer dir");
        let mut cmd = Command::new(PGBOUNCER);
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .uid(uid)
            .gid(gid);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = spawn_from_spawner(cmd);
        let bouncer = PgBouncer {
            dir,
            port,
            cluster_port: cluster.port(),
            child: Mutex::new(Some(child)),
        };
        let up = super::wait_until(Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "PgBouncer did not start: {}",
            super::log_tail(&bouncer.log(), 2000)
        );
        bouncer
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url`, a URL of the cluster's over TCP, through PgBouncer instead.
    pub fn url(&self, url: &str) -> String {
        let direct = format!("@127.0.0.1:{}", self.cluster_port);
        assert!(url.contains(&direct), "{url} is not a URL of this cluster");
        url.replace(&direct, &format!("@127.0.0.1:{}", self.port))
    }

    /// PgBouncer's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("pgbouncer.log")
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
