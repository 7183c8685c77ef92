//! Naming the builder a build ran on.
//!
//! The name comes from `--builder`, then `CACHEWARDEN_BUILDER`, then is derived from the
//! endpoint the docker client would use, host included, so that two machines never merge into
//! one builder called `default`:
//!
//! | source | name |
//! | --- | --- |
//! | `BUILDX_BUILDER=NAME` (under `wrap`: `docker buildx build --builder NAME`, or the builder `docker buildx use NAME` made current) | `buildx:name@HOSTNAME` (driver `docker-container`, in lower case); a context's name is that context; `default` is the engine below unless an instance has that name |
//! | `DOCKER_HOST=unix:///path` | `docker@HOSTNAME:/path` |
//! | `DOCKER_HOST=tcp://host:port` (or `ssh://`) | `docker@host:port` (as the client reads it: `tcp://host` is port 2375) |
//! | `DOCKER_CONTEXT=NAME` (or `currentContext` in the docker config) | `context:NAME@HOSTNAME`, reached at the engine its `meta.json` names |
//! | nothing set | `docker@HOSTNAME:/var/run/docker.sock` |
//!
//! Under `wrap`, the wrapped client's own `-H`, `--context` and `--config` flags stand for
//! `DOCKER_HOST`, `DOCKER_CONTEXT` and `DOCKER_CONFIG` ([`client_env`]).

use std::path::PathBuf;

use crate::ingest::command::ClientFlags;
use crate::model::{BuilderInfo, Driver};

/// buildx's builder on the docker driver of the current context: the Docker Engine itself.
pub const DEFAULT_BUILDX_BUILDER: &str = "default";

/// The default Docker Engine socket.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The engine the client talks to when TLS is asked for (`DOCKER_TLS_VERIFY`, `DOCKER_TLS`,
/// `--tls`, `--tlsverify`) and no host is given.
pub const DEFAULT_TLS_HOST: &str = "tcp://localhost:2376";

/// The host of the client's `default` context, as [`client_env`] gives it: its `-H`, else
/// `DOCKER_HOST`, whichever context the client is told to use (buildx's `default` builder
/// is that engine).
const DEFAULT_CONTEXT_HOST: &str = "CACHEWARDEN_DEFAULT_CONTEXT_HOST";

/// Derives the builder from flags and environment. `var` reads environment variables;
/// `hostname` is this machine's name; `current_context` is the docker config's
/// `currentContext`, if any.
pub fn derive(
    flag: Option<&str>,
    var: &dyn Fn(&str) -> Option<String>,
    hostname: &str,
    current_context: Option<&str>,
) -> BuilderInfo {
    let raw = var;
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    // The client takes any `DOCKER_HOST` that is not empty, blank included (the default
    // engine), and reads it as `ParseHost` does.
    let tls = tls_asked(raw);
    let endpoint = var("DOCKER_HOST")
        .filter(|v| !v.is_empty())
        .map(|host| client_host(&host, tls));
    let var = set;
    if let Some(name) = flag
        .map(str::to_owned)
        .or_else(|| var("CACHEWARDEN_BUILDER"))
    {
        return BuilderInfo {
            name,
            driver: None,
            endpoint,
        };
    }
    if let Some(buildx) = var("BUILDX_BUILDER") {
        if let Some(builder) = buildx_builder(&var, &buildx, hostname) {
            return builder;
        }
        // buildx's `default` is the docker context `default`: the engine `-H` or
        // `DOCKER_HOST` names, else the default one; never the current context's.
        let host = raw(DEFAULT_CONTEXT_HOST)
            .filter(|v| !v.is_empty())
            .map(|host| client_host(&host, tls))
            .or_else(|| endpoint.clone());
        return match host {
            Some(host) => endpoint_builder(host, hostname),
            None => default_engine(tls, hostname),
        };
    }
    if let Some(host) = endpoint {
        return endpoint_builder(host, hostname);
    }
    let context = var("DOCKER_CONTEXT").or_else(|| current_context.map(str::to_owned));
    if let Some(context) = context.filter(|c| c != "default") {
        return context_builder(&var, &context, hostname);
    }
    default_engine(tls, hostname)
}

/// Whether the client asks for TLS: `DOCKER_TLS_VERIFY` or `DOCKER_TLS` set to anything but
/// empty, `DOCKER_TLS_VERIFY=0` too ([`client_env`] puts the client's `--tls` and
/// `--tlsverify` there).
fn tls_asked(var: &dyn Fn(&str) -> Option<String>) -> bool {
    ["DOCKER_TLS_VERIFY", "DOCKER_TLS"]
        .iter()
        .any(|name| var(name).is_some_and(|v| !v.is_empty()))
}

/// A `-H` or `DOCKER_HOST` value as the client reads it ([`read_host`]); a blank one is the
/// engine it reaches with no host given, the TLS port on this machine when TLS is asked for.
fn client_host(host: &str, tls: bool) -> String {
    if tls && host.trim().is_empty() {
        DEFAULT_TLS_HOST.to_owned()
    } else {
        read_host(host)
    }
}

/// The engine a client reaches with no host and no context given: with TLS asked for, a TLS
/// port on this machine; else the default socket.
fn default_engine(tls: bool, hostname: &str) -> BuilderInfo {
    if tls {
        return endpoint_builder(DEFAULT_TLS_HOST.to_owned(), hostname);
    }
    BuilderInfo {
        name: name_for_endpoint(DEFAULT_DOCKER_HOST, hostname),
        driver: Some(Driver::Docker),
        endpoint: Some(DEFAULT_DOCKER_HOST.to_owned()),
    }
}

/// The builder buildx runs on when told `--builder NAME` (or `BUILDX_BUILDER=NAME`), as
/// buildx looks it up: the builder instance of that name first (buildx names them in lower
/// case; `default` too, when one has that name), else the docker context of that name; `None`
/// for `default` then, the engine of the client's context.
fn buildx_builder(
    var: &dyn Fn(&str) -> Option<String>,
    name: &str,
    hostname: &str,
) -> Option<BuilderInfo> {
    let instance = buildx_dir(var).and_then(|dir| buildx_instance(&dir, name));
    if instance.is_none() {
        if name.eq_ignore_ascii_case(DEFAULT_BUILDX_BUILDER) {
            return None;
        }
        if context_meta(var, name)
            .is_some_and(|meta| meta.get("Name").and_then(|n| n.as_str()) == Some(name))
        {
            return Some(context_builder(var, name, hostname));
        }
    }
    Some(BuilderInfo {
        name: format!(
            "buildx:{}@{hostname}",
            instance.unwrap_or_else(|| name.to_ascii_lowercase())
        ),
        driver: Some(Driver::DockerContainer),
        endpoint: None,
    })
}

/// The Docker Engine of docker context `name` (not `default`): named after the context, and
/// reached at the engine the context store gives it, if any.
fn context_builder(
    var: &dyn Fn(&str) -> Option<String>,
    name: &str,
    hostname: &str,
) -> BuilderInfo {
    BuilderInfo {
        name: format!("context:{name}@{hostname}"),
        driver: Some(Driver::Docker),
        endpoint: context_host(var, name),
    }
}

/// The Docker Engine at `host` (as [`parse_host`] gives it).
fn endpoint_builder(host: String, hostname: &str) -> BuilderInfo {
    BuilderInfo {
        name: engine_name(&host, hostname),
        driver: Some(Driver::Docker),
        endpoint: Some(host),
    }
}

/// The name of the Docker Engine at `host` on machine `hostname`: the default socket under
/// another path (`/run/docker.sock` where `/var/run` links to `/run`) is the same engine, and
/// the same caches, so it keeps the default's name.
pub fn engine_name(host: &str, hostname: &str) -> String {
    let host = read_host(host);
    let named = if same_socket(&host, DEFAULT_DOCKER_HOST) {
        DEFAULT_DOCKER_HOST
    } else {
        &host
    };
    name_for_endpoint(named, hostname)
}

/// An engine address as the client reads it ([`parse_host`]), or as given when the client
/// would refuse it.
fn read_host(host: &str) -> String {
    parse_host(host).unwrap_or_else(|| host.to_owned())
}

/// An engine address as the docker client reads `-H` and `DOCKER_HOST` (its `ParseHost`):
/// trimmed, blank for the default socket, `tcp` when no scheme is given, `unix://` alone for
/// the default socket, and a TCP address given its default host and port
/// (`tcp://localhost:2375`). `None` for what the client refuses.
pub fn parse_host(value: &str) -> Option<String> {
    let host = value.trim();
    if host.is_empty() {
        return Some(DEFAULT_DOCKER_HOST.to_owned());
    }
    let (proto, rest) = host.split_once("://").unwrap_or(("tcp", host));
    match proto {
        "tcp" => parse_tcp(rest),
        "unix" | "npipe" => {
            let rest = rest.strip_prefix(&format!("{proto}://")).unwrap_or(rest);
            if rest.contains("://") {
                return None;
            }
            let default = if proto == "unix" {
                "/var/run/docker.sock"
            } else {
                "//./pipe/docker_engine"
            };
            Some(format!(
                "{proto}://{}",
                if rest.is_empty() { default } else { rest }
            ))
        }
        "fd" | "ssh" => Some(host.to_owned()),
        _ => None,
    }
}

/// A `tcp://` address with its default host (`localhost`) and port (2375) filled in.
fn parse_tcp(addr: &str) -> Option<String> {
    if addr.is_empty() {
        return Some("tcp://localhost:2375".to_owned());
    }
    if addr.contains("://") {
        return None;
    }
    let (authority, path) = addr.find('/').map_or((addr, ""), |at| addr.split_at(at));
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':').unwrap_or(after))
    } else if authority.matches(':').count() > 1 {
        (authority, "")
    } else {
        authority.split_once(':').unwrap_or((authority, ""))
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let port = if port.is_empty() { "2375" } else { port };
    if port.parse::<u16>().is_err() {
        return None;
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Some(format!("tcp://{host}:{port}{path}"))
}

/// The engine address the docker context store gives context `name`
/// (`contexts/meta/SHA256(NAME)/meta.json` in the docker config directory), if any.
/// The client reads the file by the name's hash and takes its endpoint whatever name the file
/// holds.
pub fn context_host(var: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    let meta = context_meta(var, name)?;
    parse_host(meta.pointer("/Endpoints/docker/Host")?.as_str()?)
}

/// The context store's `meta.json` of context `name`: `contexts/meta/SHA256(NAME)/` in the
/// docker config directory.
fn context_meta(var: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<serde_json::Value> {
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(name.as_bytes()));
    let meta = config_dir(var)?
        .join("contexts")
        .join("meta")
        .join(hash)
        .join("meta.json");
    serde_json::from_str(&std::fs::read_to_string(meta).ok()?).ok()
}

/// Whether two engine addresses name one engine: the same once read as the client reads them
/// ([`parse_host`]), or one socket file.
pub fn same_engine(a: &str, b: &str) -> bool {
    let (a, b) = (read_host(a), read_host(b));
    a == b || same_socket(&a, &b)
}

/// Whether two `unix://` endpoints name one socket file (through links, or spelled apart).
fn same_socket(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let file = |endpoint: &str| {
        let path = endpoint.strip_prefix("unix://")?;
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.dev(), meta.ino()))
    };
    a != b && file(a).is_some() && file(a) == file(b)
}

/// `docker@HOST:/path` for a local socket, `docker@host:port` for a remote engine.
pub fn name_for_endpoint(endpoint: &str, hostname: &str) -> String {
    match endpoint.split_once("://") {
        Some(("unix" | "npipe", path)) => format!("docker@{hostname}:{path}"),
        Some((_, rest)) => format!("docker@{}", rest.trim_end_matches('/')),
        None => format!("docker@{hostname}:{endpoint}"),
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The docker client's config directory: `DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir(var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".docker")))
}

/// The docker config's `currentContext`.
pub fn current_context(var: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let text = std::fs::read_to_string(config_dir(var)?.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("currentContext")?.as_str().map(str::to_owned)
}

/// The environment a docker client run with `flags` sees: `-H` and `--context` stand for
/// `DOCKER_HOST` and `DOCKER_CONTEXT`, as the client resolves them (a context named by flag
/// wins over `DOCKER_HOST`; `-H` means the default context), and `--config` for
/// `DOCKER_CONFIG`. Every other variable is `var`'s.
pub fn client_env<'a>(
    flags: &'a ClientFlags,
    var: &'a dyn Fn(&str) -> Option<String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    // An empty `--context` is none given.
    let context = flags.context.as_deref().filter(|c| !c.is_empty());
    move |name: &str| match name {
        "DOCKER_HOST" => match context {
            Some(context) if context != "default" => None,
            _ => flags.host.clone().or_else(|| var(name)),
        },
        "DOCKER_CONTEXT" => match (context, &flags.host) {
            (Some(context), _) => Some(context.to_owned()),
            (None, Some(_)) => Some("default".to_owned()),
            (None, None) => var(name),
        },
        // Never the environment's own: only the client's flags and `DOCKER_HOST` say it.
        DEFAULT_CONTEXT_HOST => flags.host.clone().or_else(|| var("DOCKER_HOST")),
        "DOCKER_CONFIG" => flags
            .config
            .as_ref()
            .map(|dir| dir.to_string_lossy().into_owned())
            .or_else(|| var(name)),
        // `--tls=false` turns off what `DOCKER_TLS` asks for, not `DOCKER_TLS_VERIFY`.
        "DOCKER_TLS" => match flags.tls {
            Some(true) => Some("1".to_owned()),
            Some(false) => None,
            None => var(name),
        },
        _ => var(name),
    }
}

/// The builder `docker buildx use` made current for the client's context, as buildx finds
/// it: `$BUILDX_CONFIG` (else `buildx` in the docker config directory) holds `current`, which
/// names a builder for one context's endpoint or for all (`--global`), then a default per
/// endpoint under `defaults/`. `None` when none is set, or when the one set is the context's
/// own engine (no builder instance of that name).
pub fn buildx_current(var: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let dir = buildx_dir(var)?;
    // buildx keys the current builder by the context's name, or by the engine's endpoint for
    // the default context.
    let host = var("DOCKER_HOST").filter(|v| !v.is_empty());
    let context = if host.is_some() {
        DEFAULT_BUILDX_BUILDER.to_owned()
    } else {
        set("DOCKER_CONTEXT")
            .or_else(|| current_context(var))
            .unwrap_or_else(|| DEFAULT_BUILDX_BUILDER.to_owned())
    };
    let key = if context == DEFAULT_BUILDX_BUILDER {
        host.map_or_else(
            || DEFAULT_DOCKER_HOST.to_owned(),
            |h| client_host(&h, tls_asked(var)),
        )
    } else {
        context.clone()
    };
    let instance = |name: &str| buildx_instance(&dir, name);
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Current {
        #[serde(default)]
        key: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        global: bool,
    }
    if let Some(current) = std::fs::read_to_string(dir.join("current"))
        .ok()
        .and_then(|text| serde_json::from_str::<Current>(&text).ok())
        && !current.name.is_empty()
    {
        if current.global
            && let Some(name) = instance(&current.name)
        {
            return Some(name);
        }
        if current.key == key {
            return instance(&current.name).or_else(|| instance(&context));
        }
    }
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()));
    if let Some(name) = std::fs::read_to_string(dir.join("defaults").join(&hash[..20]))
        .ok()
        .and_then(|name| instance(&name))
    {
        return Some(name);
    }
    // Then the builder named as the context: an instance of that name first.
    instance(&context)
}

/// The builder instance `name` names in the buildx config directory `dir`, as buildx finds it
/// (lower case; its file must hold JSON), or `None`.
pub fn buildx_instance(dir: &std::path::Path, name: &str) -> Option<String> {
    let name = instance_name(name)?;
    let text = std::fs::read_to_string(dir.join("instances").join(&name)).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?;
    Some(name)
}

/// The buildx config directory: `$BUILDX_CONFIG`, else `buildx` in the docker config
/// directory.
pub fn buildx_dir(var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    var("BUILDX_CONFIG")
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from)
        .or_else(|| config_dir(var).map(|d| d.join("buildx")))
}

/// A builder instance's name as buildx stores it (lowercase), when it is one buildx accepts:
/// a letter, then letters, digits, `.`, `-` and `_`.
fn instance_name(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    valid.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn one_socket_under_two_paths_is_one_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        std::fs::write(&socket, "").unwrap();
        let link = dir.path().join("run");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let other = dir.path().join("other.sock");
        std::fs::write(&other, "").unwrap();
        let unix = |path: &std::path::Path| format!("unix://{}", path.display());
        assert!(same_socket(
            &unix(&link.join("docker.sock")),
            &unix(&socket)
        ));
        assert!(same_socket(
            &format!("unix://{}//docker.sock", dir.path().display()),
            &unix(&socket)
        ));
        assert!(!same_socket(&unix(&other), &unix(&socket)));
        assert!(!same_socket(
            &unix(&dir.path().join("absent.sock")),
            &unix(&socket)
        ));
        assert!(!same_socket("tcp://127.0.0.1:2375", &unix(&socket)));
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// Two machines with the default socket never share a builder name.
    #[test]
    fn default_socket_includes_the_host() {
        let a = derive(None, &env(&[]), "runner-a", None);
        let b = derive(None, &env(&[]), "runner-b", None);
        assert_eq!(a.name, "docker@runner-a:/var/run/docker.sock");
        assert_ne!(a.name, b.name);
    }

    /// The flag wins over the environment, which wins over derivation.
    #[test]
    fn flag_then_env_then_endpoint() {
        let vars = env(&[
            ("CACHEWARDEN_BUILDER", "ci-7"),
            ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
        ]);
        assert_eq!(derive(Some("mine"), &vars, "h", None).name, "mine");
        assert_eq!(derive(None, &vars, "h", None).name, "ci-7");
        let vars = env(&[("DOCKER_HOST", "tcp://10.0.0.5:2376")]);
        assert_eq!(derive(None, &vars, "h", None).name, "docker@10.0.0.5:2376");
        let vars = env(&[("BUILDX_BUILDER", "fleet")]);
        assert_eq!(derive(None, &vars, "h", None).name, "buildx:fleet@h");
        // buildx's `default` builder is the engine the client talks to.
        let vars = env(&[
            ("BUILDX_BUILDER", "default"),
            ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
        ]);
        let default = derive(None, &vars, "h", None);
        assert_eq!(default.name, "docker@10.0.0.5:2376");
        assert_eq!(default.driver, Some(Driver::Docker));
        assert_eq!(
            derive(None, &env(&[]), "h", Some("remote")).name,
            "context:remote@h"
        );
    }

    /// The client's `-H` and `--context` flags choose the engine as the client does: a
    /// context named by flag wins over `DOCKER_HOST`, `-H` over `DOCKER_CONTEXT`.
    #[test]
    fn the_clients_flags_choose_the_engine() {
        let vars = env(&[
            ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
            ("DOCKER_CONTEXT", "ci"),
        ]);
        let named = |flags: &ClientFlags| derive(None, &client_env(flags, &vars), "h", None).name;
        assert_eq!(named(&ClientFlags::default()), "docker@10.0.0.5:2376");
        let host = ClientFlags {
            host: Some("unix:///run/other.sock".into()),
            ..ClientFlags::default()
        };
        assert_eq!(named(&host), "docker@h:/run/other.sock");
        let context = ClientFlags {
            context: Some("remote".into()),
            ..ClientFlags::default()
        };
        assert_eq!(named(&context), "context:remote@h");
        let default = ClientFlags {
            context: Some("default".into()),
            ..ClientFlags::default()
        };
        assert_eq!(named(&default), "docker@10.0.0.5:2376");
        // An empty `--context` is none given.
        let empty = ClientFlags {
            context: Some(String::new()),
            ..ClientFlags::default()
        };
        assert_eq!(named(&empty), "docker@10.0.0.5:2376");
        // buildx's `default` builder is the `default` context's engine, whatever context the
        // client is told to use.
        let vars = env(&[
            ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
            ("BUILDX_BUILDER", "default"),
        ]);
        let default = |flags: &ClientFlags| derive(None, &client_env(flags, &vars), "h", None).name;
        assert_eq!(default(&context), "docker@10.0.0.5:2376");
        assert_eq!(default(&host), "docker@h:/run/other.sock");
        let vars = env(&[("BUILDX_BUILDER", "default"), ("DOCKER_CONTEXT", "ci")]);
        assert_eq!(
            derive(None, &client_env(&context, &vars), "h", None).name,
            "docker@h:/var/run/docker.sock"
        );
        let vars = env(&[("DOCKER_CONTEXT", "ci")]);
        let named = |flags: &ClientFlags| derive(None, &client_env(flags, &vars), "h", None).name;
        assert_eq!(named(&ClientFlags::default()), "context:ci@h");
        assert_eq!(named(&host), "docker@h:/run/other.sock");
    }

    /// `docker buildx use` is read as buildx reads it: the current builder of the context's
    /// key (the endpoint for the default context), a global one, then the per-endpoint
    /// default; a name that is no builder instance, or no valid name, is none.
    #[test]
    fn the_builder_buildx_use_made_current() {
        let dir = tempfile::tempdir().unwrap();
        let buildx = dir.path().join("buildx");
        std::fs::create_dir_all(buildx.join("instances")).unwrap();
        std::fs::create_dir_all(buildx.join("defaults")).unwrap();
        for name in ["fleet", "other"] {
            std::fs::write(buildx.join("instances").join(name), "{}").unwrap();
        }
        let config = dir.path().to_string_lossy().into_owned();
        let current = |json: &str| std::fs::write(buildx.join("current"), json).unwrap();
        let with = |pairs: &[(&str, &str)]| {
            let mut all = vec![("DOCKER_CONFIG", config.as_str())];
            all.extend_from_slice(pairs);
            buildx_current(&env(&all))
        };
        current(r#"{"Key":"unix:///var/run/docker.sock","Name":"Fleet","Global":false}"#);
        assert_eq!(with(&[]).as_deref(), Some("fleet"));
        // Another engine, or another context, has a current builder of its own.
        assert_eq!(with(&[("DOCKER_HOST", "unix:///other.sock")]), None);
        assert_eq!(with(&[("DOCKER_CONTEXT", "remote")]), None);
        current(r#"{"Key":"remote","Name":"other","Global":false}"#);
        assert_eq!(
            with(&[("DOCKER_CONTEXT", "remote")]).as_deref(),
            Some("other")
        );
        current(r#"{"Key":"x","Name":"fleet","Global":true}"#);
        assert_eq!(
            with(&[("DOCKER_HOST", "unix:///other.sock")]).as_deref(),
            Some("fleet")
        );
        // The context's own engine (no instance of that name), and a name that would leave
        // the directory, are no builder.
        current(r#"{"Key":"unix:///var/run/docker.sock","Name":"default","Global":false}"#);
        assert_eq!(with(&[]), None);
        current(r#"{"Key":"unix:///var/run/docker.sock","Name":"../instances/fleet"}"#);
        assert_eq!(with(&[]), None);
        // The per-endpoint default.
        std::fs::remove_file(buildx.join("current")).unwrap();
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            b"tcp://10.0.0.5:2376",
        ));
        std::fs::write(buildx.join("defaults").join(&hash[..20]), "other").unwrap();
        assert_eq!(
            with(&[("DOCKER_HOST", "tcp://10.0.0.5:2376")]).as_deref(),
            Some("other")
        );
        assert_eq!(with(&[]), None);
        // `BUILDX_CONFIG` moves the directory.
        let moved = tempfile::tempdir().unwrap();
        assert_eq!(
            with(&[
                ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
                ("BUILDX_CONFIG", &moved.path().to_string_lossy()),
            ]),
            None
        );
    }

    /// Engine addresses are read as the docker client reads them, so one engine spelled two
    /// ways is one builder.
    #[test]
    fn hosts_are_read_as_the_client_reads_them() {
        let cases = [
            (
                " unix:///var/run/docker.sock",
                Some("unix:///var/run/docker.sock"),
            ),
            ("unix://", Some("unix:///var/run/docker.sock")),
            (" ", Some("unix:///var/run/docker.sock")),
            ("tcp://10.0.0.5", Some("tcp://10.0.0.5:2375")),
            ("10.0.0.5:2376", Some("tcp://10.0.0.5:2376")),
            ("tcp://:2376", Some("tcp://localhost:2376")),
            ("tcp://[::1]", Some("tcp://[::1]:2375")),
            (
                "tcp://10.0.0.5:2375/prefix",
                Some("tcp://10.0.0.5:2375/prefix"),
            ),
            ("ssh://ci@builder", Some("ssh://ci@builder")),
            ("tcp://10.0.0.5:port", None),
            ("http://10.0.0.5", None),
        ];
        for (given, read) in cases {
            assert_eq!(parse_host(given).as_deref(), read, "{given:?}");
        }
        let named = |pairs: &[(&str, &str)]| derive(None, &env(pairs), "h", None).name;
        assert_eq!(
            named(&[("DOCKER_HOST", "tcp://10.0.0.5")]),
            named(&[("DOCKER_HOST", "10.0.0.5:2375")])
        );
        // A blank `DOCKER_HOST` is set: the client takes the default engine, not the context.
        assert_eq!(
            named(&[("DOCKER_HOST", " "), ("DOCKER_CONTEXT", "remote")]),
            "docker@h:/var/run/docker.sock"
        );
        assert_eq!(
            named(&[("DOCKER_HOST", "unix://")]),
            "docker@h:/var/run/docker.sock"
        );
        // buildx names its builders in lower case.
        assert_eq!(named(&[("BUILDX_BUILDER", "Fleet")]), "buildx:fleet@h");
        // TLS asked for, no host: the client's default is the TLS port on localhost.
        assert_eq!(
            named(&[("DOCKER_TLS_VERIFY", "1")]),
            "docker@localhost:2376"
        );
        // The same, with the client's TLS flags: `--tls` (or `--tlsverify`) or `--tls=false`.
        let flagged = |tls: bool, vars: &[(&str, &str)]| {
            let flags = ClientFlags {
                tls: Some(tls),
                ..ClientFlags::default()
            };
            derive(None, &client_env(&flags, &env(vars)), "h", None).name
        };
        assert_eq!(flagged(true, &[]), "docker@localhost:2376");
        // As the client reads them: an empty variable asks for nothing; `--tls=false` turns
        // off `DOCKER_TLS`, but not `DOCKER_TLS_VERIFY`, which means TLS whatever its value.
        assert_eq!(
            named(&[("DOCKER_TLS", "")]),
            "docker@h:/var/run/docker.sock"
        );
        assert_eq!(
            named(&[("DOCKER_TLS_VERIFY", "0")]),
            "docker@localhost:2376"
        );
        assert_eq!(
            flagged(false, &[("DOCKER_TLS", "1")]),
            "docker@h:/var/run/docker.sock"
        );
        assert_eq!(
            flagged(false, &[("DOCKER_TLS_VERIFY", "1")]),
            "docker@localhost:2376"
        );
        // A blank host is the engine the client reaches with none given: with TLS, the TLS
        // port, for buildx's `default` builder too; a space asks for TLS as any value does.
        assert_eq!(
            flagged(true, &[("DOCKER_HOST", " ")]),
            "docker@localhost:2376"
        );
        assert_eq!(
            named(&[("DOCKER_HOST", " "), ("DOCKER_TLS_VERIFY", "1")]),
            "docker@localhost:2376"
        );
        assert_eq!(
            named(&[
                ("DOCKER_HOST", " "),
                ("DOCKER_TLS", "1"),
                ("BUILDX_BUILDER", "default")
            ]),
            "docker@localhost:2376"
        );
        assert_eq!(named(&[("DOCKER_TLS", " ")]), "docker@localhost:2376");
    }

    /// A context keeps its name, and is reached at the engine its `meta.json` gives (whatever
    /// name the file holds, as the client reads it); a buildx builder name is an instance's
    /// first, `default` too, then a context's; an instance file that is not JSON is no instance;
    /// with no current builder set, the instance named as the context is the current one.
    #[test]
    fn contexts_and_instances_are_looked_up_as_docker_and_buildx_do() {
        let dir = tempfile::tempdir().unwrap();
        let meta = |name: &str, stored_name: &str, host: &str| {
            let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(name.as_bytes()));
            let at = dir.path().join("contexts/meta").join(hash);
            std::fs::create_dir_all(&at).unwrap();
            std::fs::write(
                at.join("meta.json"),
                format!(
                    r#"{{"Name":"{stored_name}","Endpoints":{{"docker":{{"Host":"{host}"}}}}}}"#
                ),
            )
            .unwrap();
        };
        meta("alias", "decoy", "unix:///var/run/docker.sock");
        meta("remote", "remote", "tcp://10.0.0.5");
        std::fs::create_dir_all(dir.path().join("buildx/instances")).unwrap();
        std::fs::write(dir.path().join("buildx/instances/fleet"), "{}").unwrap();
        std::fs::write(dir.path().join("buildx/instances/junk"), "not json").unwrap();
        let config = dir.path().to_string_lossy().into_owned();
        let named = |pairs: &[(&str, &str)]| {
            let mut all = vec![("DOCKER_CONFIG", config.as_str())];
            all.extend_from_slice(pairs);
            derive(None, &env(&all), "h", None)
        };
        let alias = named(&[("DOCKER_CONTEXT", "alias")]);
        assert_eq!(alias.name, "context:alias@h");
        assert_eq!(
            alias.endpoint.as_deref(),
            Some("unix:///var/run/docker.sock")
        );
        let remote = named(&[("DOCKER_CONTEXT", "remote")]);
        assert_eq!(remote.name, "context:remote@h");
        assert_eq!(remote.endpoint.as_deref(), Some("tcp://10.0.0.5:2375"));
        assert_eq!(named(&[("DOCKER_CONTEXT", "gone")]).endpoint, None);
        assert_eq!(
            named(&[("BUILDX_BUILDER", "remote")]).name,
            "context:remote@h"
        );
        assert_eq!(named(&[("BUILDX_BUILDER", "FLEET")]).name, "buildx:fleet@h");
        assert_eq!(named(&[("BUILDX_BUILDER", "junk")]).name, "buildx:junk@h");
        assert_eq!(
            named(&[("BUILDX_BUILDER", "default")]).name,
            "docker@h:/var/run/docker.sock"
        );
        let with = |pairs: &[(&str, &str)]| {
            let mut all = vec![("DOCKER_CONFIG", config.as_str())];
            all.extend_from_slice(pairs);
            buildx_current(&env(&all))
        };
        std::fs::write(
            dir.path().join("buildx/current"),
            r#"{"Key":"unix:///var/run/docker.sock","Name":"junk"}"#,
        )
        .unwrap();
        assert_eq!(with(&[]), None);
        // An instance named `default` is buildx's `default`, and the current builder of the
        // default context when none is set.
        std::fs::write(dir.path().join("buildx/instances/default"), "{}").unwrap();
        assert_eq!(
            named(&[("BUILDX_BUILDER", "default")]).name,
            "buildx:default@h"
        );
        std::fs::remove_file(dir.path().join("buildx/current")).unwrap();
        assert_eq!(with(&[]).as_deref(), Some("default"));
        assert_eq!(with(&[("DOCKER_CONTEXT", "remote")]), None);
    }
}
