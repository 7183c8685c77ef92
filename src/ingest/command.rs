//! Reading `docker build`, `docker buildx build` and `docker push` command lines.

use std::path::PathBuf;

/// What a wrapped command is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wrapped {
    Build(Box<BuildCommand>),
    Push {
        reference: String,
    },
    /// Anything else runs unrecorded.
    Other,
}

/// The flags of a build that matter for provenance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildCommand {
    /// `docker buildx build` (or `docker builder build` with buildx) rather than `docker build`.
    pub buildx: bool,
    pub cache_from: Vec<String>,
    pub cache_to: Vec<String>,
    pub tags: Vec<String>,
    pub file: Option<PathBuf>,
    pub target: Option<String>,
    pub builder: Option<String>,
    pub build_args: Vec<String>,
    /// `--build-context NAME=VALUE` values, as given.
    pub build_contexts: Vec<String>,
    /// `--platform` values, as given.
    pub platforms: Vec<String>,
    pub metadata_file: Option<PathBuf>,
    pub iidfile: Option<PathBuf>,
    pub push: bool,
    pub context: Option<String>,
    /// `--progress`, as given.
    pub progress: Option<String>,
    /// Flags neither list below knows, as given: what follows one may have been misread (a
    /// value taken for the context), so the build's inputs are not known for sure.
    pub unknown_flags: Vec<String>,
    /// The client's own flags, given before the subcommand: they choose the engine.
    pub client: ClientFlags,
    /// The index in argv after which extra flags can be inserted (just after `build`).
    pub insert_at: usize,
}

/// The docker client's global flags that choose which engine, context and config it uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFlags {
    /// `-H` / `--host`: the engine's endpoint (the last one given).
    pub host: Option<String>,
    /// `-c` / `--context`.
    pub context: Option<String>,
    /// `--config`: the client's config directory.
    pub config: Option<PathBuf>,
    /// Whether the flags ask for TLS (with no host given, the client then talks to
    /// `tcp://localhost:2376`), as the client decides it: `--tlsverify` given at all, `true`
    /// or `false`, means TLS (verified or not); else the last `--tls` says; `None` when
    /// neither is given, and the environment decides.
    pub tls: Option<bool>,
}

/// The docker client's global flags that take a value.
const CLIENT_VALUE_FLAGS: &[&str] = &[
    "-H",
    "--host",
    "-c",
    "--context",
    "--config",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
];

/// Reads the client's global flags at the start of `args` (after the program), as pflag
/// does: `--flag VALUE`, `--flag=VALUE`, `-H VALUE`, `-HVALUE`, `-H=VALUE`, and booleans run
/// together before one that takes a value (`-DH VALUE`). Returns the flags and how many words
/// they take.
fn client_flags(args: &[String]) -> (ClientFlags, usize) {
    let mut flags = ClientFlags::default();
    let mut verify_given = false;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if !arg.starts_with('-') || arg == "-" || arg == "--" {
            break;
        }
        let (flag, inline) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((f, v)) => (format!("--{f}"), Some(v.to_owned())),
                None => (arg.clone(), None),
            }
        } else {
            let letters = &arg[1..];
            match letters
                .char_indices()
                .find(|&(_, c)| CLIENT_VALUE_FLAGS.contains(&format!("-{c}").as_str()))
            {
                Some((at, c)) => (format!("-{c}"), short_value(&letters[at + c.len_utf8()..])),
                None => (arg.clone(), None),
            }
        };
        i += 1;
        let value = if CLIENT_VALUE_FLAGS.contains(&flag.as_str()) {
            match inline.clone() {
                Some(v) => Some(v),
                None => {
                    i += 1;
                    args.get(i - 1).cloned()
                }
            }
        } else {
            None
        };
        match (flag.as_str(), value) {
            ("-H" | "--host", Some(v)) => flags.host = Some(v),
            ("-c" | "--context", Some(v)) => flags.context = Some(v),
            ("--config", Some(v)) => flags.config = Some(PathBuf::from(v)),
            ("--tls", None) => {
                flags.tls = Some(
                    inline
                        .as_deref()
                        .is_none_or(|v| parse_bool(v) != Some(false)),
                );
            }
            ("--tlsverify", None) => verify_given = true,
            _ => {}
        }
    }
    if verify_given {
        flags.tls = Some(true);
    }
    (flags, i)
}

/// Build flags that take a value, long and short forms. Everything else is a boolean flag.
const VALUE_FLAGS: &[&str] = &[
    "--add-host",
    "--allow",
    "--annotation",
    "--attest",
    "--build-arg",
    "--build-context",
    "--builder",
    "--cache-from",
    "--cache-to",
    "--call",
    "--cgroup-parent",
    "--cpu-period",
    "--cpu-quota",
    "--cpu-shares",
    "-c",
    "--cpuset-cpus",
    "--cpuset-mems",
    "--file",
    "-f",
    "--iidfile",
    "--isolation",
    "--label",
    "--memory",
    "-m",
    "--memory-swap",
    "--metadata-file",
    "--network",
    "--no-cache-filter",
    "--invoke",
    "--root",
    "--server-config",
    "--output",
    "-o",
    "--platform",
    "--policy",
    "--print",
    "--progress",
    "--provenance",
    "--resource",
    "--sbom",
    "--secret",
    "--security-opt",
    "--shm-size",
    "--ssh",
    "--tag",
    "-t",
    "--target",
    "--ulimit",
];

/// Build flags that take no value (`docker build`'s and `docker buildx build`'s); each may
/// be given one inline (`--push=false`).
const BOOL_FLAGS: &[&str] = &[
    "--check",
    "--compress",
    "-D",
    "--debug",
    "--disable-content-trust",
    "--force-rm",
    "--load",
    "--no-cache",
    "--pull",
    "--push",
    "-q",
    "--quiet",
    "--rm",
    "--squash",
    "--stream",
];

/// The value given in the same word as a short flag, as pflag reads it: `-tname`, `-t=name`,
/// and `-t=` for an empty one; `None` when the value is the next word.
fn short_value(rest: &str) -> Option<String> {
    match rest.strip_prefix('=') {
        Some(value) => Some(value.to_owned()),
        None => (!rest.is_empty()).then(|| rest.to_owned()),
    }
}

/// A boolean flag's value as Go's `strconv.ParseBool` reads it.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses argv (`docker ...`). `None` when it is not a docker command at all.
pub fn parse(argv: &[String]) -> Wrapped {
    let Some(program) = argv.first() else {
        return Wrapped::Other;
    };
    let name = program.rsplit('/').next().unwrap_or(program);
    if name != "docker" && name != "docker-buildx" {
        return Wrapped::Other;
    }
    // The client's global flags (`--host`, `--context`, `--config`, `--log-level`, ...).
    let (client, taken) = client_flags(&argv[1..]);
    let i = 1 + taken;
    let words: Vec<&str> = argv[i.min(argv.len())..]
        .iter()
        .map(String::as_str)
        .collect();
    // buildx's own flags come before its subcommand: `docker buildx --builder B build`.
    let mut root_builder = None;
    let mut root = 0;
    if words.first() == Some(&"buildx") {
        root = 1;
        while let Some(word) = words.get(root) {
            match *word {
                "--builder" => {
                    root_builder = words.get(root + 1).map(|w| (*w).to_owned());
                    root += 2;
                }
                "-D" | "--debug" => root += 1,
                w if w.starts_with("--builder=") => {
                    root_builder = Some(w["--builder=".len()..].to_owned());
                    root += 1;
                }
                _ => break,
            }
        }
    }
    let (buildx, skip) = match &words[root.min(words.len())..] {
        ["build", ..] if root == 0 => (false, 1),
        ["image", "build", ..] | ["builder", "build", ..] if root == 0 => (false, 2),
        ["build", ..] | ["b", ..] if root > 0 => (true, root + 1),
        ["push", ..] => return parse_push(&words[1..]),
        ["image", "push", ..] => return parse_push(&words[2..]),
        _ => return Wrapped::Other,
    };
    let mut build = BuildCommand {
        buildx: buildx || name == "docker-buildx",
        insert_at: i + skip,
        builder: root_builder,
        client,
        ..BuildCommand::default()
    };
    let args = &argv[i + skip..];
    let (mut push_flag, mut output_push) = (false, false);
    let mut j = 0;
    while j < args.len() {
        let arg = &args[j];
        if arg == "--" {
            if let Some(ctx) = args.get(j + 1) {
                build.context = Some(ctx.clone());
            }
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            build.context = Some(arg.clone());
            j += 1;
            continue;
        }
        let (flag, inline_value) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ if !arg.starts_with("--") && arg.len() > 2 => {
                // Short flags run together, as pflag reads them: booleans (`-q`), then at most
                // one that takes a value, the rest of the word or the next one (`-qf FILE`,
                // `-tname`).
                let letters = &arg[1..];
                let value_at = letters
                    .char_indices()
                    .find(|&(_, c)| VALUE_FLAGS.contains(&format!("-{c}").as_str()));
                let booleans = &letters[..value_at.map_or(letters.len(), |(at, _)| at)];
                for c in booleans.chars() {
                    let short = format!("-{c}");
                    if !BOOL_FLAGS.contains(&short.as_str()) {
                        build.unknown_flags.push(short);
                    }
                }
                match value_at {
                    Some((at, c)) => (format!("-{c}"), short_value(&letters[at + c.len_utf8()..])),
                    None => {
                        j += 1;
                        continue;
                    }
                }
            }
            _ => (arg.clone(), None),
        };
        let takes_value = VALUE_FLAGS.contains(&flag.as_str());
        if !takes_value && !BOOL_FLAGS.contains(&flag.as_str()) {
            build.unknown_flags.push(flag.clone());
        }
        let value = if takes_value {
            match inline_value.clone() {
                Some(v) => Some(v),
                None => {
                    j += 1;
                    args.get(j).cloned()
                }
            }
        } else {
            None
        };
        j += 1;
        let Some(value) = value else {
            if flag == "--push" {
                // `--push=false` does not push; a value pflag cannot read fails the build.
                push_flag = inline_value
                    .as_deref()
                    .is_none_or(|v| parse_bool(v) != Some(false));
            }
            continue;
        };
        match flag.as_str() {
            "--cache-from" => build.cache_from.push(value),
            "--cache-to" => build.cache_to.push(value),
            "--tag" | "-t" => build.tags.push(value),
            "--file" | "-f" => build.file = Some(PathBuf::from(value)),
            "--target" => build.target = Some(value),
            "--builder" => build.builder = Some(value),
            "--build-arg" => build.build_args.push(value),
            "--build-context" => build.build_contexts.push(value),
            "--platform" => build.platforms.push(value),
            "--metadata-file" => build.metadata_file = Some(PathBuf::from(value)),
            "--iidfile" => build.iidfile = Some(PathBuf::from(value)),
            "--progress" => build.progress = Some(value),
            "--output" | "-o"
                if value.split(',').any(|field| {
                    field == "type=registry"
                        || field
                            .strip_prefix("push=")
                            .is_some_and(|v| parse_bool(v) == Some(true))
                }) =>
            {
                output_push = true;
            }
            _ => {}
        }
    }
    // buildx pushes when either `--push` or an output asks it to, in any order.
    build.push = push_flag || output_push;
    Wrapped::Build(Box::new(build))
}

/// Whether a command [`parse`] does not read may still build: a `docker` build in a form it
/// does not read (`buildx bake`, `compose build`, `compose up`), behind `sudo`, `env`, `nice`,
/// `timeout` and the like or in an `sh -c` script, or another builder's build (podman,
/// buildah, nerdctl, buildctl).
pub fn may_build(argv: &[String]) -> bool {
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    builds(&words, 0)
}

fn base_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

fn builds(words: &[&str], depth: usize) -> bool {
    let mut i = 0;
    // Wrappers, with the values of their options.
    loop {
        let Some(&word) = words.get(i) else {
            return false;
        };
        let valued: &[&str] = match base_name(word) {
            "sudo" | "doas" => &["-u", "-g", "-C", "-D", "-h", "-p", "-U", "-r", "-t", "-T"],
            "env" => &["-u", "-C", "-S"],
            "nice" => &["-n"],
            "timeout" => &["-s", "-k"],
            "nohup" | "time" | "exec" | "command" | "stdbuf" | "ionice" | "chrt" => &[],
            "sh" | "bash" | "dash" | "zsh" | "ash" => {
                // The script of `-c`, command by command.
                let Some(at) = words.iter().position(|w| *w == "-c") else {
                    return false;
                };
                let Some(script) = words.get(at + 1) else {
                    return false;
                };
                return depth < 4
                    && script
                        .split([';', '&', '|', '\n', '(', ')', '`'])
                        .any(|part| {
                            let part: Vec<&str> = part.split_whitespace().collect();
                            builds(&part, depth + 1)
                        });
            }
            _ => break,
        };
        let wrapper = base_name(word);
        i += 1;
        while let Some(&flag) = words.get(i) {
            if valued.contains(&flag) {
                i += 2;
            } else if flag.starts_with('-') || (wrapper == "env" && flag.contains('=')) {
                i += 1;
            } else {
                break;
            }
        }
        // `timeout DURATION COMMAND`.
        if wrapper == "timeout" {
            i += 1;
        }
    }
    let rest = &words[i + 1..];
    match base_name(words[i]) {
        "docker" => docker_builds(rest),
        "docker-buildx" => {
            first_word(rest, &["--builder"]).is_some_and(|w| matches!(w, "build" | "b" | "bake"))
        }
        "docker-compose" => compose_builds(rest),
        "podman" | "buildah" | "nerdctl" | "buildctl" => rest
            .iter()
            .any(|w| matches!(*w, "build" | "bud" | "buildx")),
        _ => false,
    }
}

/// The first word of `words` that is not a flag, skipping the values of the flags `valued`.
fn first_word<'a>(words: &[&'a str], valued: &[&str]) -> Option<&'a str> {
    let mut i = 0;
    while let Some(&word) = words.get(i) {
        if valued.contains(&word) {
            i += 2;
        } else if word.starts_with('-') {
            i += 1;
        } else {
            return Some(word);
        }
    }
    None
}

/// Whether `docker` with these arguments builds: its subcommand after the client's flags.
fn docker_builds(rest: &[&str]) -> bool {
    let Some(sub) = first_word(rest, CLIENT_VALUE_FLAGS) else {
        return false;
    };
    let at = rest.iter().position(|w| *w == sub).unwrap_or(0);
    let after = &rest[at + 1..];
    match sub {
        "build" => true,
        "image" | "builder" => first_word(after, &[]) == Some("build"),
        "buildx" => {
            first_word(after, &["--builder"]).is_some_and(|w| matches!(w, "build" | "b" | "bake"))
        }
        "compose" => compose_builds(after),
        _ => false,
    }
}

/// Whether a compose command builds: `build`, and `up`, `run` and `create`, which build a
/// service's image when it is missing.
fn compose_builds(rest: &[&str]) -> bool {
    const VALUED: &[&str] = &[
        "-f",
        "--file",
        "-p",
        "--project-name",
        "--profile",
        "--env-file",
        "--project-directory",
        "--ansi",
        "--progress",
        "--parallel",
    ];
    first_word(rest, VALUED).is_some_and(|w| matches!(w, "build" | "up" | "run" | "create"))
}

fn parse_push(args: &[&str]) -> Wrapped {
    // `--platform` is the one flag of `docker push` that takes a value.
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if *word == "--platform" {
            words.next();
        } else if *word == "--" {
            return words.next().map_or(Wrapped::Other, |r| Wrapped::Push {
                reference: (*r).to_owned(),
            });
        } else if !word.starts_with('-') {
            return Wrapped::Push {
                reference: (*word).to_owned(),
            };
        }
    }
    Wrapped::Other
}

impl BuildCommand {
    /// The Dockerfile path: `-f`, else `Dockerfile` in the context directory. `None` when
    /// it is no file here: standard input, or a context that is not a local directory (a
    /// URL, a git repository, a tar on standard input), where `-f` names a file inside it.
    pub fn dockerfile(&self) -> Option<PathBuf> {
        let context = self.context.as_deref().unwrap_or(".");
        // As the CLI decides: a local directory first, anything else (a URL, a git repository
        // such as `github.com/o/r`, a tar on standard input) is read by the builder.
        if context == "-" || !std::path::Path::new(context).is_dir() {
            return None;
        }
        if let Some(file) = &self.file {
            if file.as_os_str() == "-" {
                return None;
            }
            return Some(file.clone());
        }
        Some(PathBuf::from(context).join("Dockerfile"))
    }
}

/// The digest `docker push` prints: `TAG: digest: sha256:... size: N`.
pub fn pushed_digest(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once("digest: ")?;
        let digest = rest.split_whitespace().next()?;
        digest.starts_with("sha256:").then(|| digest.to_owned())
    })
}

/// Whether `docker build` runs through buildx, from what `docker --version` printed and the
/// client's `config.json`: the Docker CLI does so from version 23 on (unless `DOCKER_BUILDKIT=0`
/// picks the legacy builder), and an older one once `docker buildx install` has aliased
/// `builder` to buildx.
pub fn build_served_by_buildx(
    version: &str,
    config_json: Option<&str>,
    docker_buildkit: Option<&str>,
) -> bool {
    // The client reads it with Go's `strconv.ParseBool`.
    if docker_buildkit.is_some_and(|v| parse_bool(v) == Some(false)) {
        return false;
    }
    let major = version
        .trim()
        .strip_prefix("Docker version ")
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major.is_some_and(|m| m >= 23) {
        return true;
    }
    config_json.is_some_and(aliases_build_to_buildx)
}

/// Whether the docker config (`config.json`'s text) makes `docker build` an alias of `docker
/// buildx build` (`docker buildx install`): it then builds on buildx's current builder.
pub fn aliases_build_to_buildx(config_json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(config_json)
        .is_ok_and(|config| config["aliases"]["builder"] == "buildx")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    /// Value flags in every spelling are read, and the context is found.
    #[test]
    fn reads_build_flags() {
        let Wrapped::Build(b) = parse(&argv(
            "docker build --network=none -t reg/app:1 --tag=reg/app:latest -f docker/Dockerfile --target release \
             --cache-from reg/app:cache --cache-to=type=inline --build-arg A=1 --no-cache --iidfile /tmp/id \
             --platform linux/arm64 --platform=linux/amd64,linux/arm/v7 ctx",
        )) else {
            panic!("not a build")
        };
        assert_eq!(b.tags, ["reg/app:1", "reg/app:latest"]);
        assert_eq!(b.file, Some(PathBuf::from("docker/Dockerfile")));
        assert_eq!(b.target.as_deref(), Some("release"));
        assert_eq!(b.cache_from, ["reg/app:cache"]);
        assert_eq!(b.cache_to, ["type=inline"]);
        assert_eq!(b.build_args, ["A=1"]);
        assert_eq!(b.platforms, ["linux/arm64", "linux/amd64,linux/arm/v7"]);
        assert_eq!(b.iidfile, Some(PathBuf::from("/tmp/id")));
        assert_eq!(b.context.as_deref(), Some("ctx"));
        assert!(!b.buildx);
        assert_eq!(b.insert_at, 2);
    }

    /// buildx's own flags before `build`, short flags run together, and flags that take a
    /// value are read as the CLI reads them; a `-f` inside a context that is no directory
    /// here names no file here.
    #[test]
    fn reads_what_the_cli_reads() {
        let Wrapped::Build(b) = parse(&argv(
            "docker buildx --builder fleet -D build -qf ctx/Dockerfile.evil --no-cache-filter x ctx",
        )) else {
            panic!("not a build")
        };
        assert!(b.buildx);
        assert_eq!(b.builder.as_deref(), Some("fleet"));
        assert_eq!(b.file, Some(PathBuf::from("ctx/Dockerfile.evil")));
        assert_eq!(b.context.as_deref(), Some("ctx"));
        assert_eq!(b.insert_at, 6);
        let Wrapped::Build(b) = parse(&argv("docker build -qtweb:1 .")) else {
            panic!("not a build")
        };
        assert_eq!(b.tags, ["web:1"]);
        for remote in [
            "docker buildx build -f ctx/Dockerfile https://github.com/evil/repo.git#main",
            "docker build -f ctx/Dockerfile -",
            "docker build -f ctx/Dockerfile git@github.com:evil/repo.git",
        ] {
            let Wrapped::Build(b) = parse(&argv(remote)) else {
                panic!("not a build")
            };
            assert_eq!(b.dockerfile(), None, "{remote}");
        }
    }

    /// A flag the parser does not know is kept (what follows it may be misread), boolean
    /// flags are read with their inline values, and `docker push --platform P REF` pushes REF.
    #[test]
    fn unknown_flags_and_boolean_values_are_read() {
        let Wrapped::Build(b) = parse(&argv(
            "docker buildx build --policy disabled=true --resource memory=2g --frobnicate x -qz ctx",
        )) else {
            panic!("not a build")
        };
        assert_eq!(b.unknown_flags, ["--frobnicate", "-z"]);
        assert_eq!(b.context.as_deref(), Some("ctx"));
        for (line, push) in [
            ("docker buildx build -o type=registry --push=false .", true),
            ("docker buildx build --push=false -o type=registry .", true),
            ("docker buildx build --push=false .", false),
            ("docker buildx build --push .", true),
            ("docker buildx build --push=1 .", true),
            ("docker buildx build -o type=image,push=True .", true),
            ("docker buildx build -o type=image,push=0 .", false),
        ] {
            let Wrapped::Build(b) = parse(&argv(line)) else {
                panic!("not a build")
            };
            assert_eq!(b.push, push, "{line}");
            assert!(b.unknown_flags.is_empty(), "{line}");
        }
        let Wrapped::Build(b) = parse(&argv("docker -H= build -t= -D .")) else {
            panic!("not a build")
        };
        assert_eq!(b.client.host.as_deref(), Some(""));
        assert_eq!(b.tags, [""]);
        assert!(b.unknown_flags.is_empty(), "{:?}", b.unknown_flags);
        assert_eq!(b.context.as_deref(), Some("."));
        assert_eq!(
            parse(&argv("docker push --platform linux/amd64 reg/app:1")),
            Wrapped::Push {
                reference: "reg/app:1".into()
            }
        );
    }

    /// The client's global flags that choose the engine are kept, in every spelling pflag
    /// reads, and the subcommand after them is still found.
    #[test]
    fn keeps_the_client_flags_that_choose_the_engine() {
        let cases: [(&str, ClientFlags, usize); 6] = [
            (
                "docker -H unix:///a.sock build .",
                ClientFlags {
                    host: Some("unix:///a.sock".into()),
                    ..ClientFlags::default()
                },
                4,
            ),
            (
                "docker --host=tcp://10.0.0.5:2376 --tls build .",
                ClientFlags {
                    host: Some("tcp://10.0.0.5:2376".into()),
                    tls: Some(true),
                    ..ClientFlags::default()
                },
                4,
            ),
            (
                "docker -Hunix:///a.sock -H=unix:///b.sock build .",
                ClientFlags {
                    host: Some("unix:///b.sock".into()),
                    ..ClientFlags::default()
                },
                4,
            ),
            (
                "docker -Dc remote --config /cfg buildx build .",
                ClientFlags {
                    context: Some("remote".into()),
                    config: Some(PathBuf::from("/cfg")),
                    ..ClientFlags::default()
                },
                7,
            ),
            (
                "docker --context=remote -l debug build .",
                ClientFlags {
                    context: Some("remote".into()),
                    ..ClientFlags::default()
                },
                5,
            ),
            ("docker build .", ClientFlags::default(), 2),
        ];
        for (line, client, insert_at) in cases {
            let Wrapped::Build(b) = parse(&argv(line)) else {
                panic!("not a build: {line}")
            };
            assert_eq!(b.client, client, "{line}");
            assert_eq!(b.insert_at, insert_at, "{line}");
            assert_eq!(b.context.as_deref(), Some("."), "{line}");
        }
    }

    /// TLS as the client decides it from its flags: `--tlsverify` given at all, even
    /// `=false`, means TLS; else the last `--tls`; neither leaves it to the environment.
    #[test]
    fn reads_tls_as_the_client_does() {
        let cases = [
            ("docker build .", None),
            ("docker --tls build .", Some(true)),
            ("docker --tls=false build .", Some(false)),
            ("docker --tls --tls=0 build .", Some(false)),
            ("docker --tlsverify build .", Some(true)),
            ("docker --tlsverify=false build .", Some(true)),
            ("docker --tlsverify=false --tls=false build .", Some(true)),
            ("docker --tls=false --tlsverify=0 build .", Some(true)),
        ];
        for (line, tls) in cases {
            let Wrapped::Build(b) = parse(&argv(line)) else {
                panic!("not a build: {line}")
            };
            assert_eq!(b.client.tls, tls, "{line}");
        }
    }

    /// buildx builds behind client global flags are recognised, with --push.
    #[test]
    fn reads_buildx_with_global_flags() {
        let Wrapped::Build(b) = parse(&argv(
            "docker --host unix:///x.sock buildx build --push -tweb:1 --builder fleet .",
        )) else {
            panic!("not a build")
        };
        assert!(b.buildx && b.push);
        assert_eq!(b.tags, ["web:1"]);
        assert_eq!(b.builder.as_deref(), Some("fleet"));
        assert_eq!(b.insert_at, 5);
        assert_eq!(b.dockerfile(), Some(PathBuf::from("./Dockerfile")));
    }

    /// Pushes and other commands are told apart.
    #[test]
    fn reads_push_and_other() {
        assert_eq!(
            parse(&argv("docker push reg/app:1")),
            Wrapped::Push {
                reference: "reg/app:1".into()
            }
        );
        assert_eq!(parse(&argv("make build")), Wrapped::Other);
        assert_eq!(parse(&argv("docker run busybox")), Wrapped::Other);
        for building in [
            "sudo docker build .",
            "sudo -u ci docker build .",
            "env A=1 docker build .",
            "timeout 600 docker build .",
            "docker buildx bake",
            "docker buildx --builder b bake",
            "docker compose build",
            "docker compose -f c.yml up --build",
            "/usr/bin/docker --context remote image build .",
            "nerdctl build .",
        ] {
            assert!(may_build(&argv(building)), "{building}");
        }
        assert!(may_build(&[
            "sh".to_owned(),
            "-c".to_owned(),
            "cd app && docker build .".to_owned()
        ]));
        for other in [
            "make build",
            "docker run busybox",
            "docker run --rm node:20 npm run build",
            "docker cp a b",
            "sudo -E ls",
        ] {
            assert!(!may_build(&argv(other)), "{other}");
        }
    }

    /// The digest line of `docker push` output is found.
    #[test]
    fn finds_pushed_digest() {
        let out = "The push refers to repository [127.0.0.1:5000/app]\n1: digest: sha256:abc123 size: 527\n";
        assert_eq!(pushed_digest(out).as_deref(), Some("sha256:abc123"));
        assert_eq!(pushed_digest("nothing"), None);
    }

    /// `docker build` runs through buildx from Docker 23 on, or where `docker buildx install`
    /// aliased it; not on 20.10 as it comes, nor with the legacy builder asked for.
    #[test]
    fn tells_when_docker_build_runs_through_buildx() {
        let v26 = "Docker version 26.1.5+dfsg1, build a72d7cd\n";
        let v20 = "Docker version 20.10.24+dfsg1, build 297e128\n";
        assert!(build_served_by_buildx(v26, None, None));
        assert!(build_served_by_buildx(v26, None, Some("1")));
        assert!(!build_served_by_buildx(v26, None, Some("0")));
        assert!(!build_served_by_buildx(v26, None, Some("FALSE")));
        assert!(!build_served_by_buildx(v20, None, None));
        assert!(!build_served_by_buildx(v20, Some("{\"auths\": {}}"), None));
        let aliased = r#"{"aliases": {"builder": "buildx"}}"#;
        assert!(build_served_by_buildx(v20, Some(aliased), None));
        assert!(!build_served_by_buildx("", Some("not json"), None));
    }
}
