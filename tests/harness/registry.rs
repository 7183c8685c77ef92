//! A distribution registry (`docker-registry serve`) on a loopback port.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::http::{self, Request, Response};
use super::{DOCKER_REGISTRY, log_tail, wait_until};

/// How to configure the registry.
#[derive(Debug, Clone)]
pub struct RegistryOpts {
    /// `storage.delete.enabled`: without it DELETE answers 405.
    pub delete_enabled: bool,
    /// Basic authentication against a bcrypt htpasswd file: (user, password).
    pub auth: Option<(String, String)>,
}

impl Default for RegistryOpts {
    fn default() -> Self {
        Self {
            delete_enabled: true,
            auth: None,
        }
    }
}

impl RegistryOpts {
    pub fn with_auth(user: &str, password: &str) -> Self {
        Self {
            auth: Some((user.to_owned(), password.to_owned())),
            ..Self::default()
        }
    }
}

/// A running registry; dropping it kills the process and removes its storage.
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    opts: RegistryOpts,
    child: Option<Child>,
}

const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl Registry {
    /// Starts a registry on a free loopback port and waits until `/v2/` answers.
    pub fn start(opts: RegistryOpts) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cwreg")
            .tempdir()
            .expect("create the registry's temporary directory");
        fs::create_dir_all(dir.path().join("storage")).expect("create the registry storage");
        if let Some((user, password)) = &opts.auth {
            write_htpasswd(&dir.path().join("htpasswd"), user, password);
        }
        let mut registry = Self {
            dir,
            port: 0,
            opts,
            child: None,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            registry.port = free_port();
            registry.write_config();
            match registry.spawn() {
                Ok(()) => return registry,
                Err(err) => failures.push(err),
            }
        }
        panic!(
            "the registry did not start after {START_ATTEMPTS} attempts: {}",
            failures.join("; ")
        );
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user and password when authentication is on.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.opts
            .auth
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Where the registry keeps its blobs and manifests.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// Sends a request, with the credentials when authentication is on.
    pub fn request(&self, request: Request<'_>) -> Response {
        let request = match self.credentials() {
            Some((user, password)) => request.basic_auth(user, password),
            None => request,
        };
        http::tcp(&self.host(), &request).unwrap_or_else(|err| {
            panic!(
                "registry {} did not answer {}: {err}",
                self.host(),
                request.path
            )
        })
    }

    /// `GET path` with the credentials when authentication is on.
    pub fn get(&self, path: &str) -> Response {
        self.request(Request::get(path))
    }

    /// The tags of a repository, empty when it does not exist.
    pub fn tags(&self, repository: &str) -> Vec<String> {
        let response = self.get(&format!("/v2/{repository}/tags/list"));
        if response.status == 404 {
            return Vec::new();
        }
        assert_eq!(
            response.status,
            200,
            "tags/list of {repository}: {}",
            response.text()
        );
        let mut tags: Vec<String> = response.json()["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// The digest the registry serves a Docker image manifest under, by tag or digest.
    pub fn manifest_digest(&self, repository: &str, reference: &str) -> String {
        self.request(
            Request::new("HEAD", &format!("/v2/{repository}/manifests/{reference}")).header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            ),
        )
        .header("Docker-Content-Digest")
        .unwrap_or_else(|| panic!("no manifest {repository}:{reference}"))
        .to_owned()
    }

    /// The digest the registry serves any manifest or index under (a registry cache export is
    /// an OCI index), by tag or digest.
    pub fn any_manifest_digest(&self, repository: &str, reference: &str) -> String {
        self.request(
            Request::new("HEAD", &format!("/v2/{repository}/manifests/{reference}")).header(
                "Accept",
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            ),
        )
        .header("Docker-Content-Digest")
        .unwrap_or_else(|| panic!("no manifest {repository}:{reference}"))
        .to_owned()
    }

    /// Stops the registry; its port and storage are kept for [`Registry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The port was ours a moment ago; give the kernel a little time if it lingers.
        for _ in 0..START_ATTEMPTS {
            match self.spawn() {
                Ok(()) => return,
                Err(err) => last = err,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the registry did not restart on {}: {last}", self.host());
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn write_config(&self) {
        let root = self.dir.path();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: {delete}\n\
             http:\n  addr: {host}\n",
            storage = root.join("storage").display(),
            delete = self.opts.delete_enabled,
            host = self.host(),
        );
        if self.opts.auth.is_some() {
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: cachewarden-test\n    path: {}\n",
                root.join("htpasswd").display()
            ));
        }
        fs::write(self.config_path(), config).expect("write the registry config");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|err| format!("open {}: {err}", self.log_path().display()))?;
        let log_err = log.try_clone().map_err(|err| err.to_string())?;
        let child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|err| format!("cannot run {DOCKER_REGISTRY}: {err}"))?;
        self.child = Some(child);
        let host = self.host();
        let mut exited = None;
        let ready = wait_until(READY_TIMEOUT, || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status);
                return true;
            }
            http::tcp(&host, &Request::get("/v2/")).is_ok()
        });
        if let Some(status) = exited {
            self.child = None;
            return Err(format!(
                "registry on {host} exited with {status}: {}",
                log_tail(&self.log_path(), 600).trim()
            ));
        }
        if !ready {
            self.stop();
            return Err(format!(
                "registry on {host} did not answer /v2/ within {READY_TIMEOUT:?}"
            ));
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago: bind port 0 and let go of it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

fn write_htpasswd(path: &Path, user: &str, password: &str) {
    let output = Command::new("htpasswd")
        .args(["-B", "-b", "-n", user, password])
        .output()
        .expect("run htpasswd (apache2-utils) to make the registry's password file");
    assert!(
        output.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    fs::write(path, &output.stdout).expect("write the htpasswd file");
}
