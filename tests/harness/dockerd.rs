//! A private Docker Engine: its own data root, exec root, containerd and unix socket.
//!
//! Each dockerd gets a containerd the harness starts, with its own root, state and sockets,
//! passed with `--containerd`: left to itself, dockerd 20.10 would use the system containerd
//! whenever `/run/containerd/containerd.sock` exists, sharing state with the system Docker.
//! So the tests run beside a system Docker and never need it stopped.

use std::fs::{self, File};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::http::{self, Request};
use super::{BUSYBOX, CONTAINERD, DOCKER, DOCKER26_PREFIX, DOCKERD, log_tail, wait_until};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The busybox applets linked into the test images.
const APPLETS: &[&str] = &[
    "sh",
    "cat",
    "ls",
    "cp",
    "mv",
    "rm",
    "mkdir",
    "touch",
    "echo",
    "printf",
    "find",
    "sha256sum",
    "head",
    "tail",
    "wc",
    "grep",
    "sed",
    "sort",
    "env",
    "test",
    "true",
    "false",
    "sleep",
    "date",
    "id",
    "chmod",
    "ln",
    "stat",
    "du",
    "dd",
    "tee",
    "xargs",
    "tar",
];

/// Which Docker Engine a [`Dockerd`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Debian 12's Docker 20.10 (embedded BuildKit v0.8), the system's.
    Docker20,
    /// Debian 13's Docker 26.1 (embedded BuildKit v0.13) with its own containerd 1.7, unpacked
    /// under [`DOCKER26_PREFIX`], with the containerd image store, so that its docker driver
    /// exports registry caches. Debian 12's `docker` client, runc and tini serve it.
    Docker26,
}

impl Engine {
    fn dockerd(self) -> String {
        match self {
            Engine::Docker20 => DOCKERD.to_owned(),
            Engine::Docker26 => format!("{DOCKER26_PREFIX}/usr/sbin/dockerd"),
        }
    }

    /// The containerd the harness starts for the daemon.
    fn containerd(self) -> String {
        match self {
            Engine::Docker20 => CONTAINERD.to_owned(),
            Engine::Docker26 => format!("{DOCKER26_PREFIX}/usr/bin/containerd"),
        }
    }

    fn daemon_json(self) -> &'static str {
        match self {
            Engine::Docker20 => "{}\n",
            Engine::Docker26 => "{\"features\": {\"containerd-snapshotter\": true}}\n",
        }
    }

    /// `PATH` for the daemon: it starts the `containerd` and shims it finds there.
    fn path(self) -> String {
        let system =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        match self {
            Engine::Docker20 => system,
            Engine::Docker26 => {
                format!("{DOCKER26_PREFIX}/usr/bin:{DOCKER26_PREFIX}/usr/sbin:{system}")
            }
        }
    }
}

/// A running private dockerd. Dropping it stops the daemon and its containerd, unmounts
/// whatever it left mounted and removes its directory.
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    containerd: Option<Child>,
    images: AtomicUsize,
}

impl Dockerd {
    /// Starts a Docker 20.10 dockerd without networking and waits until `/_ping` answers.
    pub fn start() -> Self {
        Self::start_engine(Engine::Docker20)
    }

    /// Starts a dockerd of `engine` without networking and waits until `/_ping` answers.
    pub fn start_engine(engine: Engine) -> Self {
        // A short path: the daemon's and containerd's unix sockets live under it.
        let dir = tempfile::Builder::new()
            .prefix("cwd")
            .tempdir_in("/tmp")
            .expect("create the dockerd directory under /tmp");
        let root = dir.path();
        for sub in ["data", "exec", "config"] {
            fs::create_dir_all(root.join(sub)).expect("create the dockerd directories");
        }
        fs::write(root.join("daemon.json"), engine.daemon_json()).expect("write daemon.json");
        let containerd = start_containerd(root, engine);
        let log = File::create(root.join("dockerd.log")).expect("create the dockerd log");
        let log_err = log.try_clone().expect("clone the log handle");
        let dockerd_bin = engine.dockerd();
        let child = Command::new(&dockerd_bin)
            .env("PATH", engine.path())
            .arg("--config-file")
            .arg(root.join("daemon.json"))
            .arg("--containerd")
            .arg(containerd_socket(root))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("pid"))
            .arg("--host")
            .arg(format!("unix://{}", root.join("sock").display()))
            .args(["--bridge=none", "--iptables=false", "--ip-forward=false"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {dockerd_bin}: {err}"));
        let mut dockerd = Self {
            dir,
            child: Some(child),
            containerd: Some(containerd),
            images: AtomicUsize::new(0),
        };
        let socket = dockerd.socket();
        let mut exited = None;
        let ready = wait_until(READY_TIMEOUT, || {
            if let Some(child) = dockerd.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status);
                return true;
            }
            http::unix(&socket, &Request::get("/_ping")).is_ok_and(|r| r.status == 200)
        });
        if let Some(status) = exited {
            dockerd.child = None;
            panic!(
                "dockerd exited with {status} while starting:\n{}",
                log_tail(&dockerd.log_path(), 2000)
            );
        }
        if !ready {
            let log = log_tail(&dockerd.log_path(), 2000);
            drop(dockerd);
            panic!("dockerd did not answer /_ping within {READY_TIMEOUT:?}:\n{log}");
        }
        dockerd
    }

    /// `unix:///tmp/cwd.../sock`, the value for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn exec_root(&self) -> PathBuf {
        self.dir.path().join("exec")
    }

    /// The client config directory (`DOCKER_CONFIG`): `docker login` writes here.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("dockerd.log")
    }

    /// A `docker` command aimed at this daemon, with BuildKit on and a private client config.
    pub fn docker<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(DOCKER);
        command
            .args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_BUILDKIT", "1")
            .env("DOCKER_CONFIG", self.config_dir())
            .env("BUILDKIT_PROGRESS", "plain")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .stdin(Stdio::null());
        command
    }

    /// Runs a `docker` command, fails the test when it fails, and returns its stdout.
    pub fn run<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = self.docker(args);
        let output = command.output().expect("run docker");
        check(&command, &output);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `docker build --network=none -t TAG [extra...] CONTEXT`; returns the build's output.
    pub fn build(&self, context: &Path, tag: &str, extra: &[&str]) -> String {
        let mut command = self.docker(["build", "--network=none", "-t", tag]);
        command.args(extra).arg(context);
        let output = command.output().expect("run docker build");
        check(&command, &output);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// Imports a root filesystem of `/bin/busybox` and its applets as `tag`; returns the
    /// image id (`sha256:...`).
    pub fn import_busybox(&self, tag: &str) -> String {
        let n = self.images.fetch_add(1, Ordering::Relaxed);
        let rootfs = self.dir.path().join(format!("rootfs{n}"));
        make_busybox_rootfs(&rootfs);
        let tarball = self.dir.path().join(format!("rootfs{n}.tar"));
        let status = Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(status.success(), "tar of the busybox rootfs failed");
        let id = self.run(["import".as_ref(), tarball.as_os_str(), tag.as_ref()]);
        let _ = fs::remove_dir_all(&rootfs);
        let _ = fs::remove_file(&tarball);
        id.trim().to_owned()
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, libc::SIGTERM);
            let stopped = wait_until(STOP_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_))));
            if !stopped {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if let Some(mut containerd) = self.containerd.take() {
            stop_child(&mut containerd);
        }
        // Shims outlive their containerd; each names its containerd's socket, under the dir.
        kill_processes_mentioning(self.dir.path());
        unmount_under(self.dir.path());
    }

    /// The socket of this daemon's own containerd.
    pub fn containerd_socket(&self) -> PathBuf {
        containerd_socket(self.dir.path())
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn containerd_socket(root: &Path) -> PathBuf {
    root.join("containerd/sock")
}

/// Starts a containerd with its root, state and sockets under `root/containerd`, and waits for
/// its socket. The CRI plugin is off: it would want CNI and a second port.
fn start_containerd(root: &Path, engine: Engine) -> Child {
    let dir = root.join("containerd");
    fs::create_dir_all(&dir).expect("create the containerd directory");
    let socket = containerd_socket(root);
    let config = format!(
        "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
         [grpc]\n  address = {socket:?}\n\n[ttrpc]\n  address = {ttrpc:?}\n",
        root = dir.join("root"),
        state = dir.join("state"),
        socket = socket,
        ttrpc = dir.join("sock.ttrpc"),
    );
    fs::write(dir.join("config.toml"), config).expect("write the containerd config");
    let log = File::create(root.join("containerd.log")).expect("create the containerd log");
    let log_err = log.try_clone().expect("clone the log handle");
    let containerd_bin = engine.containerd();
    let mut child = Command::new(&containerd_bin)
        .env("PATH", engine.path())
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {containerd_bin}: {err}"));
    let mut exited = None;
    let ready = wait_until(READY_TIMEOUT, || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        socket.exists()
    });
    let log = || log_tail(&root.join("containerd.log"), 2000);
    if let Some(status) = exited {
        panic!("containerd exited with {status} while starting:\n{}", log());
    }
    if !ready {
        stop_child(&mut child);
        panic!(
            "containerd did not create {socket:?} within {READY_TIMEOUT:?}:\n{}",
            log()
        );
    }
    child
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
fn stop_child(child: &mut Child) {
    signal(child.id() as i32, libc::SIGTERM);
    if !wait_until(STOP_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_)))) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn check(command: &Command, output: &Output) {
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Kills (SIGKILL) every process whose command line mentions `path`: the containerd and
/// shims a daemon started under its exec root.
fn kill_processes_mentioning(path: &Path) {
    let needle = path.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            signal(pid as i32, libc::SIGKILL);
        }
    }
}

/// Lazily unmounts every mount point under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(unescape_mount_path)
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for point in points {
        let Ok(c_path) = std::ffi::CString::new(point) else {
            continue;
        };
        // SAFETY: a valid NUL-terminated path.
        unsafe {
            libc::umount2(c_path.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// `/proc/mounts` writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes a root filesystem of busybox with its applets, `/etc/passwd` and `/tmp`.
pub fn make_busybox_rootfs(rootfs: &Path) {
    for sub in ["bin", "etc", "root", "tmp", "dev", "proc", "sys"] {
        fs::create_dir_all(rootfs.join(sub)).expect("create the rootfs directories");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
        .expect("chmod /tmp");
    fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
        .unwrap_or_else(|err| panic!("copy {BUSYBOX}: {err}"));
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("link a busybox applet");
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .expect("write /etc/passwd");
    fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("write /etc/group");
}
