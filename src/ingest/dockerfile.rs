//! Dockerfile reading for provenance: base images, stages and cache mounts.
//!
//! The reader follows BuildKit's Dockerfile frontend: parser directives, line continuations
//! with the escape token, heredocs, exec-form instructions, `ARG` and `ENV` expansion, the
//! automatic platform arguments, and the stage graph that decides which stages a build of one
//! target runs.
//!
//! Values the file cannot show are kept as written rather than guessed: a variable a base
//! image's `ENV` may set, or an automatic platform argument when the platform is not known.
//! A `FROM` or a target that cannot be resolved is never passed over: it could be any stage
//! whose name fits, so the cache mounts of every such stage are counted, and a warning says so.
//!
//! Reading one file takes a bounded amount of work ([`WORK`]): the bytes its variables expand
//! to and the steps its pattern substitutions take. A file that doubles an `ARG` forty times
//! (a terabyte) or matches a long pattern against a long value (hours) is refused at the
//! instruction that runs out; BuildKit could not build the first either.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::ingest::IngestError;
use crate::model::{ImageRef, MountUse, Sharing, clean_path};

/// What a Dockerfile tells the hook about a build of one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerfileInfo {
    /// Base images of the stages that are built, after `ARG` substitution; stage names and
    /// `scratch` are not base images. In first-use order, without duplicates.
    pub base_images: Vec<String>,
    /// Every stage name, in order (unnamed stages have none).
    pub stages: Vec<String>,
    /// Cache mounts of `RUN` instructions in the stages that are built, or may be.
    pub mounts: Vec<MountUse>,
    /// `FROM` references of the stages that are built that use a variable whose value is not
    /// known. Kept as written, in first-use order, and left out of `base_images`.
    pub unresolved_base_images: Vec<String>,
    /// What could not be resolved and was over-approximated: a `FROM` with a variable whose
    /// value is not known, a target the file does not have.
    pub warnings: Vec<IngestError>,
}

/// A platform as BuildKit's automatic platform arguments show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: String,
}

/// Operating systems Go knows: a single-word platform that is one of them is an OS
/// (containerd's platform parser).
const KNOWN_OS: [&str; 17] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];
/// Architectures Go knows: a single-word platform that is not an OS must be one of them.
const KNOWN_ARCH: [&str; 24] = [
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

impl Platform {
    /// `linux/amd64`.
    pub fn linux_amd64() -> Self {
        Self {
            os: "linux".to_owned(),
            arch: "amd64".to_owned(),
            variant: String::new(),
        }
    }

    /// The platform a builder on this machine builds for when nothing says otherwise: BuildKit
    /// takes its own (`linux/arm64` on an arm64 runner). An architecture Go does not name is
    /// taken for amd64.
    pub fn host() -> Self {
        Self::of_machine(std::env::consts::ARCH, cfg!(target_endian = "little"))
    }

    /// `linux` on the machine architecture `arch` (as Rust names it), in Go's names.
    fn of_machine(arch: &str, little_endian: bool) -> Self {
        let (arch, variant) = match arch {
            "aarch64" => ("arm64", ""),
            "x86" => ("386", ""),
            "arm" => ("arm", "v7"),
            "powerpc64" if little_endian => ("ppc64le", ""),
            "powerpc64" => ("ppc64", ""),
            "s390x" => ("s390x", ""),
            "riscv64" => ("riscv64", ""),
            "loongarch64" => ("loong64", ""),
            "mips64" if little_endian => ("mips64le", ""),
            "mips64" => ("mips64", ""),
            _ => ("amd64", ""),
        };
        Self {
            os: "linux".to_owned(),
            arch: arch.to_owned(),
            variant: variant.to_owned(),
        }
    }

    /// One `--platform` value (`linux/arm64`, `linux/arm/v7`, `arm64`, `windows`), normalized
    /// as containerd does; `local` is `build`. The error is the reason.
    pub fn parse(value: &str, build: &Platform) -> Result<Self, String> {
        let lower = value.trim().to_ascii_lowercase();
        if lower == "local" {
            return Ok(build.clone());
        }
        let parts: Vec<&str> = lower.split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if parts.len() > 3 || !parts.iter().all(valid) {
            return Err("expected `os/arch[/variant]`, such as `linux/arm64`".to_owned());
        }
        let os = |p: &str| if p == "macos" { "darwin" } else { p }.to_owned();
        let (os, (arch, variant)) = match parts.as_slice() {
            [one] if KNOWN_OS.contains(&os(one).as_str()) => {
                (os(one), (build.arch.clone(), build.variant.clone()))
            }
            [one] => {
                let arch = normalize_arch(one, "");
                if !KNOWN_ARCH.contains(&arch.0.as_str()) {
                    return Err("not a known operating system or architecture".to_owned());
                }
                ("linux".to_owned(), arch)
            }
            [o, a] => (os(o), normalize_arch(a, "")),
            [o, a, v] => (os(o), normalize_arch(a, v)),
            _ => unreachable!("one to three parts"),
        };
        Ok(Self { os, arch, variant })
    }
}

/// containerd's `normalizeArch`.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (arch, variant) = match (arch, variant) {
        ("i386", _) => ("386", ""),
        ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64", ""),
        ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v),
        ("aarch64" | "arm64", "8" | "v8" | "v8.0") => ("arm64", ""),
        ("aarch64" | "arm64", "9" | "9.0" | "v9.0") => ("arm64", "v9"),
        ("aarch64" | "arm64", v) => ("arm64", v),
        ("armhf", _) => ("arm", "v7"),
        ("armel", _) => ("arm", "v6"),
        ("arm", "" | "7") => ("arm", "v7"),
        ("arm", "5") => ("arm", "v5"),
        ("arm", "6") => ("arm", "v6"),
        ("arm", "8") => ("arm", "v8"),
        (a, v) => (a, v),
    };
    (arch.to_owned(), variant.to_owned())
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// What the hook knows of one build besides the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--build-arg` values: they override `ARG` defaults and the automatic platform
    /// arguments, and `BUILDKIT_CACHE_MOUNT_NS` sets the cache mount namespace.
    pub build_args: BTreeMap<String, String>,
    /// The stage that is built, the last one by default.
    pub target: Option<String>,
    /// `--platform`: one build per platform; none builds for the build platform.
    pub platforms: Vec<Platform>,
    /// The builder's platform; `None` when it is not known, which leaves the automatic
    /// platform arguments it sets unknown.
    pub build_platform: Option<Platform>,
}

/// Build arguments BuildKit sets from the build and target platforms, before the first `FROM`.
const PLATFORM_ARGS: [&str; 10] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDOSVERSION",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETOSVERSION",
    "TARGETARCH",
    "TARGETVARIANT",
];

/// The build argument that namespaces cache mount ids.
const CACHE_NAMESPACE_ARG: &str = "BUILDKIT_CACHE_MOUNT_NS";

/// The build argument that names the frontend image, over a `# syntax=` directive.
const SYNTAX_ARG: &str = "BUILDKIT_SYNTAX";

/// How many different sets of variable values one stage may end with when its base is not
/// known; past this, the rest are not followed into child stages (and a warning says so).
const MAX_VARIANTS: usize = 64;

/// How deep `${...}` words may nest inside each other: the reader follows them by recursion,
/// and a file that nests them thousands deep must not exhaust the stack.
const MAX_NESTING: usize = 64;

/// Instructions BuildKit knows. Others are skipped, so that newer instructions do not stop
/// the reader.
const INSTRUCTIONS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Instructions whose arguments may be a JSON array (exec form).
const EXEC_FORM: [&str; 7] = ["add", "cmd", "copy", "entrypoint", "run", "shell", "volume"];

/// Parses Dockerfile `text` for a build on and for this machine's platform
/// ([`Platform::host`]); `source` names the file in errors.
///
/// `build_args` are the build's `--build-arg` values: they override `ARG` defaults, and
/// `BUILDKIT_CACHE_MOUNT_NS` sets the cache mount namespace. `target` is the stage that is
/// built, the last one by default.
pub fn parse(
    text: &str,
    source: &str,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> Result<DockerfileInfo, IngestError> {
    let options = BuildOptions {
        build_args: build_args.clone(),
        target: target.map(str::to_owned),
        platforms: Vec::new(),
        build_platform: Some(Platform::host()),
    };
    parse_build(text, source, &options)
}

/// Parses Dockerfile `text` for the build `options` describe; `source` names the file in
/// errors and warnings. A build for several platforms counts what each of them uses.
pub fn parse_build(
    text: &str,
    source: &str,
    options: &BuildOptions,
) -> Result<DockerfileInfo, IngestError> {
    let to_error = |p: Problem| IngestError::new(source, p.line, p.message);
    let targets: Vec<Option<&Platform>> = if options.platforms.is_empty() {
        vec![options.build_platform.as_ref()]
    } else {
        options.platforms.iter().map(Some).collect()
    };
    let mut info = DockerfileInfo::default();
    for target_platform in targets {
        let (one, warnings) = analyze(text, options, target_platform).map_err(to_error)?;
        info.stages = one.stages;
        for image in one.base_images {
            push_unique(&mut info.base_images, image);
        }
        for image in one.unresolved_base_images {
            push_unique(&mut info.unresolved_base_images, image);
        }
        for mount in one.mounts {
            push_unique(&mut info.mounts, mount);
        }
        for warning in warnings {
            push_unique(&mut info.warnings, to_error(warning));
        }
    }
    Ok(info)
}

/// An error, at the first line of the instruction it concerns where there is one.
#[derive(Debug)]
struct Problem {
    line: Option<usize>,
    message: String,
}

impl Problem {
    fn at(line: usize, message: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            message: message.into(),
        }
    }

    fn whole_file(message: impl Into<String>) -> Self {
        Self {
            line: None,
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stages and what a build of the target uses.
// ---------------------------------------------------------------------------------------------

/// One `FROM` and the instructions up to the next.
#[derive(Debug)]
struct Stage {
    /// Lowercased `AS` name.
    name: Option<String>,
    line: usize,
    /// The base as written.
    base_text: String,
    /// The base after global `ARG` expansion.
    base: String,
    /// `base` keeps a variable whose value is not known: these, in first-use order.
    unknown: Vec<String>,
    /// The earlier stages `base` names: one when it names a stage, none for an image, and
    /// every stage whose name fits when `base` is not known.
    parents: Vec<usize>,
    commands: Vec<Instruction>,
}

impl Stage {
    fn declare(from: Instruction) -> Result<Self, Problem> {
        let words: Vec<&str> = from
            .args
            .split(is_separator)
            .filter(|w| !w.is_empty())
            .collect();
        let name = match words.as_slice() {
            [_] => None,
            [_, keyword, name] if keyword.eq_ignore_ascii_case("as") => {
                let lower = name.to_ascii_lowercase();
                if !is_stage_name(&lower) {
                    return Err(Problem::at(
                        from.line,
                        format!(
                            "invalid stage name `{name}`: it must start with a letter and contain only \
                             letters, digits, `-`, `_` and `.`"
                        ),
                    ));
                }
                Some(lower)
            }
            _ => return Err(Problem::at(from.line, "FROM takes `image [AS name]`")),
        };
        Ok(Self {
            name,
            line: from.line,
            base_text: words[0].to_owned(),
            base: String::new(),
            unknown: Vec::new(),
            parents: Vec::new(),
            commands: Vec::new(),
        })
    }

    fn unresolved(&self) -> bool {
        !self.unknown.is_empty()
    }

    /// The base is known to be this one earlier stage (whose `ONBUILD` triggers run here).
    fn sure_parent(&self) -> Option<usize> {
        match self.parents.as_slice() {
            [parent] if !self.unresolved() => Some(*parent),
            _ => None,
        }
    }

    /// The parent stages the stage may start from, and `None` for an image (or `scratch`).
    fn starts(&self) -> Vec<Option<usize>> {
        if let Some(parent) = self.sure_parent() {
            return vec![Some(parent)];
        }
        let mut starts: Vec<Option<usize>> = self.parents.iter().copied().map(Some).collect();
        starts.push(None);
        starts
    }

    fn is_scratch(&self) -> bool {
        self.parents.is_empty() && !self.unresolved() && self.base.eq_ignore_ascii_case("scratch")
    }
}

/// `^[a-z][a-z0-9-_.]*$`, BuildKit's rule for stage names.
fn is_stage_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Something a stage reads from besides its base: another stage or an image.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Stage(usize),
    Image(String),
}

/// Whether a stage is built: surely, perhaps (it is reached only through a `FROM` or a target
/// that is not known), or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    No,
    Maybe,
    Yes,
}

/// The instructions a stage runs when it starts from `parent`: the parent stage's `ONBUILD`
/// triggers first, then its own.
fn steps(
    stages: &[Stage],
    index: usize,
    parent: Option<usize>,
) -> impl Iterator<Item = &Instruction> {
    let inherited = parent
        .map(|p| stages[p].commands.as_slice())
        .unwrap_or_default();
    inherited
        .iter()
        .filter_map(|c| c.trigger.as_deref())
        .chain(stages[index].commands.iter())
}

/// Reads the file for one target platform; the problems returned beside the result are
/// warnings.
fn analyze(
    text: &str,
    options: &BuildOptions,
    target_platform: Option<&Platform>,
) -> Result<(DockerfileInfo, Vec<Problem>), Problem> {
    // Splitting the file into instructions (heredocs included) costs what the file's length
    // does and takes nothing from the work: a heredoc is never missed for want of it. Each
    // platform then has the whole of it.
    WORK_LEFT.with(|left| left.set(u64::MAX));
    let document = read(text)?;
    WORK_LEFT.with(|left| left.set(WORK));
    let escape = document.escape;
    let build_args = &options.build_args;
    // The frontend that reads the file runs first, as an image: `--build-arg BUILDKIT_SYNTAX`
    // names it over the file's `# syntax=` directive.
    let frontend = build_args
        .get(SYNTAX_ARG)
        .map(|v| frontend_image(v.trim()).to_owned())
        .filter(|v| !v.is_empty())
        .or_else(|| detect_syntax(text));
    let (global_args, mut stages) = split_stages(document.instructions)?;
    let target = options.target.as_deref().filter(|t| !t.is_empty());
    let platforms = (options.build_platform.as_ref(), target_platform);
    let globals = global_scope(&global_args, &stages, build_args, target, platforms, escape)?;
    let mut wild = Scope::new(Var::Unset);
    wild.wild = true;
    let wild = global_scope_in(
        wild,
        &global_args,
        &stages,
        build_args,
        target,
        platforms,
        escape,
    )?;
    let by_name = resolve_bases(&mut stages, &globals, &wild, escape)?;
    let mut warnings = Vec::new();
    let targets = match target {
        None => vec![stages.len() - 1],
        Some(target) => match by_name.get(&target.to_ascii_lowercase()) {
            Some(index) => vec![*index],
            None => {
                warnings.push(unknown_target(target, &stages));
                (0..stages.len()).collect()
            }
        },
    };
    let sources = stage_sources(&stages, &by_name, escape)?;
    let sure = targets.len() == 1;
    let needed = needed_stages(&stages, &sources, &targets, sure);
    for (index, stage) in stages.iter().enumerate() {
        if needed[index] != Need::No && stage.unresolved() {
            warnings.push(unresolved_from(&stages, index));
        }
    }

    let mut info = DockerfileInfo {
        stages: stages.iter().filter_map(|s| s.name.clone()).collect(),
        base_images: frontend.into_iter().collect(),
        ..DockerfileInfo::default()
    };
    for (index, stage) in stages.iter().enumerate() {
        if needed[index] == Need::No {
            continue;
        }
        // An image a stage that may not be built names is counted only if it is a reference
        // at all: the build would refuse it, were the stage built.
        let maybe = needed[index] == Need::Maybe;
        let mut base_image = |image: &str| {
            if maybe && let Err(err) = ImageRef::parse(image, "FROM") {
                warnings.push(Problem::at(
                    stage.line,
                    format!("{err} (skipped: the build may not run this stage)"),
                ));
            } else {
                push_unique(&mut info.base_images, image.to_owned());
            }
        };
        if stage.unresolved() {
            push_unique(&mut info.unresolved_base_images, stage.base.clone());
        } else if stage.parents.is_empty() && !stage.is_scratch() {
            base_image(&stage.base);
        }
        for (source, _) in &sources[index] {
            if let Source::Image(image) = source {
                base_image(image);
            }
        }
    }
    info.mounts = cache_mounts(
        &stages,
        &needed,
        &globals,
        build_args,
        escape,
        &mut warnings,
    )?;
    Ok((info, warnings))
}

/// Splits instructions into the `ARG`s before the first `FROM` and the stages.
fn split_stages(instructions: Vec<Instruction>) -> Result<(Vec<Instruction>, Vec<Stage>), Problem> {
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "from" {
            stages.push(Stage::declare(instruction)?);
        } else if let Some(stage) = stages.last_mut() {
            stage.commands.push(instruction);
        } else if instruction.keyword == "arg" {
            global_args.push(instruction);
        } else if INSTRUCTIONS.contains(&instruction.keyword.as_str()) {
            return Err(Problem::at(
                instruction.line,
                format!(
                    "{} comes before the first FROM",
                    instruction.keyword.to_ascii_uppercase()
                ),
            ));
        }
    }
    if stages.is_empty() {
        return Err(Problem::whole_file(
            "no FROM instruction: the file has no build stage",
        ));
    }
    Ok((global_args, stages))
}

/// The automatic platform arguments of a build on `build` for `target` (the build platform
/// when `None`); a platform that is not known leaves its arguments unknown.
fn platform_vars(build: Option<&Platform>, target: Option<&Platform>) -> [(&'static str, Var); 10] {
    let target = target.or(build);
    let vars = |p: Option<&Platform>| match p {
        Some(p) => [
            Var::Set(p.to_string()),
            Var::Set(p.os.clone()),
            Var::Set(String::new()),
            Var::Set(p.arch.clone()),
            Var::Set(p.variant.clone()),
        ],
        None => [
            Var::Unknown,
            Var::Unknown,
            Var::Unknown,
            Var::Unknown,
            Var::Unknown,
        ],
    };
    let [bp, bos, bosv, barch, bvar] = vars(build);
    let [tp, tos, tosv, tarch, tvar] = vars(target);
    let values = [bp, bos, bosv, barch, bvar, tp, tos, tosv, tarch, tvar];
    let mut out = PLATFORM_ARGS.map(|name| (name, Var::Unknown));
    for ((_, slot), value) in out.iter_mut().zip(values) {
        *slot = value;
    }
    out
}

/// The scope `FROM` lines see: the automatic platform arguments and `TARGETSTAGE`, then the
/// `ARG`s before the first `FROM`, with build arguments overriding their defaults.
fn global_scope(
    global_args: &[Instruction],
    stages: &[Stage],
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    platforms: (Option<&Platform>, Option<&Platform>),
    escape: char,
) -> Result<Scope, Problem> {
    let empty = Scope::new(Var::Unset);
    global_scope_in(
        empty,
        global_args,
        stages,
        build_args,
        target,
        platforms,
        escape,
    )
}

/// [`global_scope`] built on `globals`: with a wild scope, the values that are not known are
/// patterns.
fn global_scope_in(
    mut globals: Scope,
    global_args: &[Instruction],
    stages: &[Stage],
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    (build_platform, target_platform): (Option<&Platform>, Option<&Platform>),
    escape: char,
) -> Result<Scope, Problem> {
    for (name, value) in platform_vars(build_platform, target_platform) {
        let value = build_args.get(name).map_or(value, |v| Var::Set(v.clone()));
        globals.vars.insert(name.to_owned(), value);
    }
    let target_stage = build_args
        .get("TARGETSTAGE")
        .cloned()
        .or_else(|| target.map(str::to_owned))
        .or_else(|| stages.last().and_then(|s| s.name.clone()))
        .unwrap_or_else(|| "default".to_owned());
    globals
        .vars
        .insert("TARGETSTAGE".to_owned(), Var::Set(target_stage));
    for instruction in global_args {
        for (key, default) in arg_words(instruction, escape)? {
            if let Some(value) = build_args.get(&key) {
                globals.vars.insert(key, Var::Set(value.clone()));
            } else if let Some(default) = default {
                let value = globals
                    .expand(&default, escape)
                    .map_err(|m| Problem::at(instruction.line, m))?;
                globals.vars.insert(key, value.into_var());
            }
        }
    }
    Ok(globals)
}

/// Expands every `FROM` and links stages to the earlier stage they build on; a `FROM` names
/// a stage only if that stage comes earlier. A `FROM` that is not known is linked to every
/// earlier stage whose name it could expand to. Returns the stages by name (the last of a
/// name wins, as in BuildKit).
fn resolve_bases(
    stages: &mut [Stage],
    globals: &Scope,
    wild: &Scope,
    escape: char,
) -> Result<BTreeMap<String, usize>, Problem> {
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for (index, stage) in stages.iter_mut().enumerate() {
        let at = |m: String| Problem::at(stage.line, m);
        let base = globals.expand(&stage.base_text, escape).map_err(at)?;
        if base.text.is_empty() {
            return Err(at(format!(
                "the base `{}` expands to nothing",
                stage.base_text
            )));
        }
        stage.parents = if base.unresolved {
            let pattern = wild_pattern(&wild.expand(&stage.base_text, escape).map_err(at)?.text);
            let mut fits: Vec<usize> = by_name
                .iter()
                // Past the file's work, any stage could be the one.
                .filter(|(name, _)| {
                    glob_matches(&pattern, &name.chars().collect::<Vec<_>>()).unwrap_or(true)
                })
                .map(|(_, index)| *index)
                .collect();
            fits.sort_unstable();
            fits
        } else {
            by_name
                .get(&base.text.to_ascii_lowercase())
                .copied()
                .into_iter()
                .collect()
        };
        stage.base = base.text;
        stage.unknown = base.unknown;
        if let Some(name) = &stage.name {
            by_name.insert(name.clone(), index);
        }
    }
    Ok(by_name)
}

/// A wild expansion as a pattern over lowercased stage names.
fn wild_pattern(text: &str) -> Vec<Glob> {
    text.chars()
        .map(|c| match c {
            WILD => Glob::Any,
            c => Glob::Char(c.to_ascii_lowercase()),
        })
        .collect()
}

/// The warning for a `FROM` that is not known.
fn unresolved_from(stages: &[Stage], index: usize) -> Problem {
    let stage = &stages[index];
    let names: Vec<String> = stage.unknown.iter().map(|n| format!("`{n}`")).collect();
    let fits: Vec<&str> = stage
        .parents
        .iter()
        .filter_map(|p| stages[*p].name.as_deref())
        .collect();
    let counted = if fits.is_empty() {
        "no stage name fits, so it is an image that is not known".to_owned()
    } else {
        format!(
            "counting the cache mounts of every stage it could be: {}",
            fits.join(", ")
        )
    };
    Problem::at(
        stage.line,
        format!(
            "`FROM {}`: the value of {} is not known; {counted}",
            stage.base_text,
            names.join(", ")
        ),
    )
}

fn unknown_target(target: &str, stages: &[Stage]) -> Problem {
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    let known = if names.is_empty() {
        "the file names no stage".to_owned()
    } else {
        format!("stages are {}", names.join(", "))
    };
    Problem::whole_file(format!(
        "target stage `{target}` is not in the file ({known}): counting the cache mounts of every stage"
    ))
}

/// What every stage reads from besides its base, the way BuildKit builds its stage graph:
/// for all stages, without expanding mount options. A source is sure when it is read whatever
/// the stage's base turns out to be.
fn stage_sources(
    stages: &[Stage],
    by_name: &BTreeMap<String, usize>,
    escape: char,
) -> Result<Vec<Vec<(Source, bool)>>, Problem> {
    let mut sources = Vec::with_capacity(stages.len());
    for (index, stage) in stages.iter().enumerate() {
        let mut list: Vec<(Source, bool)> = Vec::new();
        for start in stage.starts() {
            let sure = start.is_none() || stage.sure_parent().is_some();
            let own = stages[index].commands.len();
            let all: Vec<&Instruction> = steps(stages, index, start).collect();
            let inherited = all.len() - own;
            for (n, step) in all.into_iter().enumerate() {
                let sure = sure || n >= inherited;
                let mut found = Vec::new();
                match step.keyword.as_str() {
                    "copy" => {
                        if let Some(from) = step.flag_values("from").last() {
                            let source = copy_source(from, by_name, stages.len(), escape)
                                .map_err(|m| Problem::at(step.line, m))?;
                            found.extend(source);
                        }
                    }
                    "run" => {
                        for value in step.flag_values("mount") {
                            let from =
                                mount_source(value).map_err(|m| Problem::at(step.line, m))?;
                            found.extend(from.and_then(|from| named_source(&from, by_name)));
                        }
                    }
                    _ => {}
                }
                for source in found {
                    match list.iter_mut().find(|(s, _)| *s == source) {
                        Some((_, was_sure)) => *was_sure |= sure,
                        None => list.push((source, sure)),
                    }
                }
            }
        }
        sources.push(list);
    }
    Ok(sources)
}

/// The stages a build of `targets` runs: the target, its base stages, and the stages they
/// copy or mount from. Several targets, or a base that is not known, make a stage a maybe.
fn needed_stages(
    stages: &[Stage],
    sources: &[Vec<(Source, bool)>],
    targets: &[usize],
    sure: bool,
) -> Vec<Need> {
    let mut needed = vec![Need::No; stages.len()];
    let first = if sure { Need::Yes } else { Need::Maybe };
    let mut pending: Vec<(usize, Need)> = targets.iter().map(|t| (*t, first)).collect();
    while let Some((index, need)) = pending.pop() {
        if needed[index] >= need {
            continue;
        }
        needed[index] = need;
        let stage = &stages[index];
        let through_base = if stage.sure_parent().is_some() {
            need
        } else {
            Need::Maybe
        };
        pending.extend(stage.parents.iter().map(|p| (*p, through_base)));
        pending.extend(sources[index].iter().filter_map(|(s, sure)| match s {
            Source::Stage(i) => Some((*i, if *sure { need } else { Need::Maybe })),
            Source::Image(_) => None,
        }));
    }
    needed
}

/// Cache mounts of the needed stages, in order, each read with its stage's `ARG` and `ENV`
/// values at that point. A stage starts from its parent stage's final values; a stage whose
/// base is not known starts from each of its possible parents' in turn. A problem in a stage
/// that is only perhaps built is a warning, as the build may never run it.
fn cache_mounts(
    stages: &[Stage],
    needed: &[Need],
    globals: &Scope,
    build_args: &BTreeMap<String, String>,
    escape: char,
    warnings: &mut Vec<Problem>,
) -> Result<Vec<MountUse>, Problem> {
    let namespace = build_args
        .get(CACHE_NAMESPACE_ARG)
        .cloned()
        .unwrap_or_default();
    let mut mounts = Vec::new();
    let mut finished: Vec<Vec<Scope>> = vec![Vec::new(); stages.len()];
    for (index, stage) in stages.iter().enumerate() {
        if needed[index] == Need::No {
            continue;
        }
        let sure = needed[index] == Need::Yes && stage.starts().len() == 1;
        let mut starts: Vec<(Option<usize>, Scope)> = Vec::new();
        for start in stage.starts() {
            match start {
                Some(parent) => {
                    starts.extend(finished[parent].iter().map(|s| (Some(parent), s.clone())));
                }
                // A base image's `ENV` is not known; `scratch` has none.
                None => starts.push((
                    None,
                    Scope::new(if stage.is_scratch() {
                        Var::Unset
                    } else {
                        Var::Unknown
                    }),
                )),
            }
        }
        let mut ends = Vec::new();
        for (parent, mut scope) in starts {
            for step in steps(stages, index, parent) {
                let result = run_step(step, &mut scope, globals, build_args, escape, &namespace);
                match result {
                    Ok(found) => {
                        for mount in found {
                            push_unique(&mut mounts, mount);
                        }
                    }
                    Err(problem) if sure => return Err(problem),
                    Err(problem) => warnings.push(Problem {
                        line: problem.line,
                        message: format!(
                            "{} (skipped: the build may not run this stage)",
                            problem.message
                        ),
                    }),
                }
            }
            if ends.contains(&scope) {
                continue;
            }
            if ends.len() < MAX_VARIANTS {
                ends.push(scope);
            } else if ends.len() == MAX_VARIANTS {
                // Past the cap, this stage's own mounts are still all counted.
                warnings.push(Problem::at(
                    stage.line,
                    format!(
                        "the stage could end with more than {MAX_VARIANTS} sets of values: \
                         stages built on it are read with the first {MAX_VARIANTS}"
                    ),
                ));
                ends.push(scope);
            }
        }
        ends.truncate(MAX_VARIANTS);
        finished[index] = ends;
    }
    Ok(mounts)
}

/// Runs one instruction on `scope`; the cache mounts it uses.
fn run_step(
    step: &Instruction,
    scope: &mut Scope,
    globals: &Scope,
    build_args: &BTreeMap<String, String>,
    escape: char,
    namespace: &str,
) -> Result<Vec<MountUse>, Problem> {
    let at = |m: String| Problem::at(step.line, m);
    let mut mounts = Vec::new();
    match step.keyword.as_str() {
        "arg" => scope.declare_args(step, globals, build_args, escape)?,
        "env" => {
            // Every pair expands with the values from before the instruction.
            let mut assigned = Vec::new();
            for (key, value) in env_pairs(&step.args, escape).map_err(at)? {
                let key = scope.expand(&key, escape).map_err(at)?.text;
                let value = scope.expand(&value, escape).map_err(at)?;
                assigned.push((key, value.into_var()));
            }
            for (key, value) in assigned {
                if !key.is_empty() {
                    scope.vars.insert(key, value);
                }
            }
        }
        "run" => {
            for value in step.flag_values("mount") {
                if let Some(mount) = cache_mount(value, scope, escape, namespace).map_err(at)? {
                    mounts.push(mount);
                }
            }
        }
        _ => {}
    }
    Ok(mounts)
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, value: T) {
    if !list.contains(&value) {
        list.push(value);
    }
}

/// The names and optional raw defaults of an `ARG` instruction.
fn arg_words(
    instruction: &Instruction,
    escape: char,
) -> Result<Vec<(String, Option<String>)>, Problem> {
    parse_words(&instruction.args, escape)
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(Problem::at(
                instruction.line,
                format!("ARG `{word}` has no name"),
            )),
            Some((key, value)) => Ok((key.to_owned(), Some(value.to_owned()))),
            None => Ok((word, None)),
        })
        .collect()
}

/// The raw `name`/`value` pairs of an `ENV` instruction, in both the `name=value ...` form
/// and the older `name value` form.
fn env_pairs(args: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = parse_words(args, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(at) = args.find(is_separator) else {
            return Err(format!("ENV `{args}` has no value: use `ENV name=value`"));
        };
        let value = args[at..].trim_start_matches(is_separator);
        return Ok(vec![(args[..at].to_owned(), value.to_owned())]);
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in &words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!("`{word}` in ENV is not `name=value`"));
        };
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// The stage or image a `COPY --from` names; `None` for `scratch`.
fn copy_source(
    from: &str,
    by_name: &BTreeMap<String, usize>,
    count: usize,
    escape: char,
) -> Result<Option<Source>, String> {
    if from.is_empty() {
        return Ok(None);
    }
    let literal = expand(from, escape, false, &|_| Var::Unset).is_ok_and(|e| e.text == from);
    if !literal {
        return Err(format!(
            "`--from={from}`: COPY --from does not expand variables; name a stage whose FROM uses the \
             global ARG instead"
        ));
    }
    if let Ok(index) = from.parse::<i64>() {
        return match usize::try_from(index) {
            Ok(index) if index < count => Ok(Some(Source::Stage(index))),
            _ => Err(format!(
                "`--from={from}`: there is no stage with index {index}"
            )),
        };
    }
    Ok(named_source(from, by_name))
}

/// A stage by name, else an image; `None` for `scratch`.
fn named_source(from: &str, by_name: &BTreeMap<String, usize>) -> Option<Source> {
    if let Some(index) = by_name.get(&from.to_ascii_lowercase()) {
        return Some(Source::Stage(*index));
    }
    (!from.eq_ignore_ascii_case("scratch")).then(|| Source::Image(from.to_owned()))
}

/// The unexpanded `from=` of a `--mount` value, for the stage graph.
fn mount_source(value: &str) -> Result<Option<String>, String> {
    let mut from = None;
    for field in csv_fields(value)? {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("from") {
            continue;
        }
        let expands = value
            .char_indices()
            .any(|(i, c)| c == '$' && i + 1 < value.len());
        if expands {
            return Err(format!(
                "`from={value}` of a mount does not expand variables; name a stage whose FROM uses the \
                 global ARG instead"
            ));
        }
        from = Some(value.to_owned());
    }
    Ok(from.filter(|f| !f.is_empty()))
}

/// Reads one `--mount` value with the stage's variables; `Some` for a cache mount.
fn cache_mount(
    value: &str,
    scope: &Scope,
    escape: char,
    namespace: &str,
) -> Result<Option<MountUse>, String> {
    let mut kind = "bind".to_owned();
    let mut mount = MountUse {
        namespace: namespace.to_owned(),
        ..MountUse::default()
    };
    let mut target = String::new();
    for field in csv_fields(value)? {
        let Some((key, raw)) = field.split_once('=') else {
            match field.trim().to_ascii_lowercase().as_str() {
                "readonly" | "ro" => mount.readonly = true,
                "readwrite" | "rw" => mount.readonly = false,
                _ => {}
            }
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let expanded = scope.expand(raw, escape)?;
        let value = expanded.text;
        if expanded.unresolved
            && !matches!(
                key.as_str(),
                "id" | "target" | "dst" | "destination" | "from"
            )
        {
            // A setting whose value the file does not show keeps its default; text fields
            // keep the reference as written.
            continue;
        }
        match key.as_str() {
            "type" => kind = value.to_ascii_lowercase(),
            "id" => mount.id = value,
            "target" | "dst" | "destination" => target = value,
            "from" => mount.from = Some(value).filter(|v| !v.is_empty()),
            "readonly" | "ro" => mount.readonly = parse_bool(&key, &value)?,
            "readwrite" | "rw" => mount.readonly = !parse_bool(&key, &value)?,
            "sharing" => {
                mount.sharing = Sharing::parse(&value.to_ascii_lowercase(), "sharing").map_err(|_| {
                    format!("invalid `sharing={value}` in a mount: expected shared, private or locked")
                })?;
            }
            "uid" | "gid" => {
                let number = parse_number(&value, 10).ok_or_else(|| {
                    format!("invalid `{key}={value}` in a mount: expected a decimal number")
                })?;
                if key == "uid" {
                    mount.uid = Some(number);
                } else {
                    mount.gid = Some(number);
                }
            }
            "mode" => {
                mount.mode = Some(parse_number(&value, 8).ok_or_else(|| {
                    format!(
                        "invalid `mode={value}` in a mount: expected an octal mode such as 0755"
                    )
                })?);
            }
            // `source`, `required`, `size`, `env` and keys of later BuildKit versions.
            _ => {}
        }
    }
    if kind != "cache" {
        return Ok(None);
    }
    if target.is_empty() {
        return Err(format!("cache mount `{value}` has no `target=`"));
    }
    let target = clean_path(&target);
    if target == "/" {
        return Err(format!("cache mount `{value}` cannot mount over `/`"));
    }
    if mount.id.is_empty() {
        mount.id = target.clone();
    }
    (mount.namespace, mount.id) = crate::model::canonical_mount(&mount.namespace, &mount.id);
    mount.target = Some(target);
    Ok(Some(mount))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "invalid `{key}={value}` in a mount: expected true or false"
        )),
    }
}

/// An unsigned 32-bit number in `radix`, digits only.
fn parse_number(value: &str, radix: u32) -> Option<u32> {
    if value.is_empty() || !value.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(value, radix).ok()
}

/// The fields of one CSV record, as Go's `encoding/csv` reads a `--mount` value.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    if line.is_empty() {
        return Err("empty `--mount` value".to_owned());
    }
    let bad = |reason: &str| format!("`--mount={line}` is not valid CSV: {reason}");
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(bad("a quoted field does not end")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
            match chars.next() {
                None => return Ok(fields),
                Some(',') => {}
                Some(_) => return Err(bad("text follows a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err(bad("a quote inside an unquoted field")),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading lines into instructions.
// ---------------------------------------------------------------------------------------------

/// The instructions of a file and its escape token.
#[derive(Debug)]
struct Document {
    instructions: Vec<Instruction>,
    escape: char,
}

/// One instruction, continuation lines joined and heredoc bodies consumed.
#[derive(Debug, Clone)]
struct Instruction {
    /// 1-based number of the instruction's first line.
    line: usize,
    /// The lowercased keyword.
    keyword: String,
    /// `--name=value` flags before the arguments, quotes removed.
    flags: Vec<String>,
    /// The rest of the instruction.
    args: String,
    /// The arguments are a JSON array (exec form).
    json: bool,
    /// The instruction an `ONBUILD` registers.
    trigger: Option<Box<Instruction>>,
}

impl Instruction {
    fn new(line: &str, number: usize, escape: char) -> Self {
        let line = line.trim();
        let (command, rest) = match line.find(is_separator) {
            Some(at) => (&line[..at], line[at..].trim_start_matches(is_separator)),
            None => (line, ""),
        };
        let (args, flags) = extract_flags(rest, escape);
        let keyword = command.to_ascii_lowercase();
        let args = args.trim().to_owned();
        let json = EXEC_FORM.contains(&keyword.as_str()) && is_json_array(&args);
        let trigger = (keyword == "onbuild" && !args.is_empty())
            .then(|| Box::new(Self::new(&args, number, escape)));
        Self {
            line: number,
            keyword,
            flags,
            args,
            json,
            trigger,
        }
    }

    /// BuildKit reads heredocs in `RUN`, `COPY` and `ADD` (also as `ONBUILD` triggers), but
    /// not in their exec form.
    fn can_contain_heredoc(&self) -> bool {
        let node = self.trigger.as_deref().unwrap_or(self);
        matches!(node.keyword.as_str(), "run" | "copy" | "add") && !node.json
    }

    /// Values of `--name=value` flags, in order.
    fn flag_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.flags.iter().filter_map(move |flag| {
            let (key, value) = flag.strip_prefix("--")?.split_once('=')?;
            (key == name).then_some(value)
        })
    }
}

/// The white space BuildKit splits instructions at.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

/// `\s` of Go's regular expressions.
fn is_regex_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r')
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn is_json_array(args: &str) -> bool {
    let args = args.trim_start();
    args.starts_with('[') && serde_json::from_str::<Vec<serde_json::Value>>(args).is_ok()
}

/// Parser directives: only at the top of the file, before any instruction, blank line or
/// other comment.
#[derive(Debug)]
struct Directives {
    escape: char,
    done: bool,
    seen: BTreeSet<String>,
}

impl Directives {
    fn new() -> Self {
        Self {
            escape: '\\',
            done: false,
            seen: BTreeSet::new(),
        }
    }

    fn check(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = line
            .strip_prefix('#')
            .and_then(|rest| directive(rest.trim_start()))
        else {
            self.done = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "escape" | "syntax" | "check") {
            self.done = true;
            return Ok(());
        }
        if !self.seen.insert(name.clone()) {
            return Err(format!("only one `{name}` parser directive can be used"));
        }
        if name == "escape" {
            self.escape = match value {
                "`" => '`',
                "\\" => '\\',
                _ => return Err(format!("invalid escape token `{value}`: expected ` or \\")),
            };
        }
        Ok(())
    }
}

/// The frontend image a Dockerfile names, as BuildKit finds it before it reads the file: a
/// byte order mark and a `#!` first line are skipped, then the `syntax` directive is looked
/// for among the leading `# key=value` lines, else among leading `// key=value` lines, else as
/// the `syntax` key of a file that is one JSON object of strings. The image is the value up to
/// its first space (the rest is passed to the frontend).
fn detect_syntax(text: &str) -> Option<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("#!") => rest,
        None if text.starts_with("#!") => "",
        _ => text,
    };
    for comment in ["#", "//"] {
        for line in text.lines() {
            let Some((key, value)) = directive_line(line, comment) else {
                break;
            };
            let key = key.to_ascii_lowercase();
            if !matches!(key.as_str(), "syntax" | "escape" | "check") {
                break;
            }
            if key == "syntax" {
                return Some(frontend_image(value).to_owned());
            }
        }
    }
    let object: std::collections::HashMap<String, String> = serde_json::from_str(text).ok()?;
    object.get("syntax").map(|v| frontend_image(v).to_owned())
}

/// `KEY=VALUE` after `comment` on a line, as BuildKit's directive parser reads it: spaces
/// allowed around the key and the `=`, the key a letter then letters and digits, the value
/// not empty, trailing space dropped.
fn directive_line<'a>(line: &'a str, comment: &str) -> Option<(&'a str, &'a str)> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let rest = line.strip_prefix(comment)?.trim_start_matches(go_space);
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let value = rest
        .trim_start_matches(go_space)
        .strip_prefix('=')?
        .trim_matches(go_space);
    (!value.is_empty()).then_some((key, value))
}

/// The white space of Go's `\s`.
fn go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// The image of a frontend reference: what comes before its first space.
fn frontend_image(value: &str) -> &str {
    value.split(' ').next().unwrap_or(value)
}

/// `name=value` after the `#` of a possible directive.
fn directive(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(text.len());
    let name = &text[..end];
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = text[end..]
        .trim_start_matches(is_regex_space)
        .strip_prefix('=')?;
    let value = value.trim_matches(is_regex_space);
    (!value.is_empty() && !value.contains('\n')).then_some((name, value))
}

/// Strips a trailing escape token (and white space after it); `false` when the line
/// continues. An escaped escape token does not continue the line.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before, false);
    }
    (line, true)
}

/// A heredoc an instruction opens.
#[derive(Debug, PartialEq, Eq)]
struct Heredoc {
    /// The terminator line.
    name: String,
    /// `<<-`: leading tabs of the terminator line are ignored.
    chomp: bool,
}

/// Heredocs opened in `line`, in order, as BuildKit finds them: shell words of the form
/// `[n]<<[-]WORD`, where `WORD` may be quoted.
fn heredocs(line: &str) -> Vec<Heredoc> {
    let unknown = |_: &str| Var::Unknown;
    let mut lexer = Lexer::new(line, '\\', true, &unknown);
    match lexer.process(None, true) {
        Ok((_, words)) => words.iter().filter_map(|w| heredoc(w)).collect(),
        // BuildKit finds no heredoc in a line its shell lexer rejects.
        Err(_) => Vec::new(),
    }
}

/// `^(\d*)<<(-?)\s*([^<]*)$`, with the terminator unquoted.
fn heredoc(word: &str) -> Option<Heredoc> {
    let rest = word
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(is_regex_space);
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let unknown = |_: &str| Var::Unknown;
    let mut lexer = Lexer::new(rest, '\\', false, &unknown);
    let (_, words) = lexer.process(None, false).ok()?;
    match <[String; 1]>::try_from(words) {
        Ok([name]) => Some(Heredoc { name, chomp }),
        Err(_) => None,
    }
}

/// Reads `text` into instructions the way BuildKit's parser does.
fn read(text: &str) -> Result<Document, Problem> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split_inclusive('\n')
        .map(|l| l.trim_end_matches(['\r', '\n']))
        .collect();
    let mut directives = Directives::new();
    let mut instructions = Vec::new();
    let mut next = 0;
    while next < lines.len() {
        let number = next + 1;
        let first = lines[next].trim_start();
        next += 1;
        directives
            .check(first)
            .map_err(|m| Problem::at(number, m))?;
        if is_comment(first) {
            continue;
        }
        let escape = directives.escape;
        let (head, mut complete) = trim_continuation(first, escape);
        if complete && head.is_empty() {
            continue;
        }
        let mut logical = head.to_owned();
        while !complete && next < lines.len() {
            let line = lines[next];
            next += 1;
            directives.check(line).map_err(|m| Problem::at(next, m))?;
            // Comment and blank lines inside a continuation are dropped.
            if is_comment(line) || line.trim_start().is_empty() {
                continue;
            }
            let (part, end) = trim_continuation(line, escape);
            logical.push_str(part);
            complete = end;
        }
        let instruction = Instruction::new(&logical, number, escape);
        if instruction.can_contain_heredoc() && logical.contains("<<") {
            for heredoc in heredocs(&logical) {
                let mut terminated = false;
                while next < lines.len() {
                    let body = lines[next];
                    next += 1;
                    let candidate = if heredoc.chomp {
                        body.trim_start_matches('\t')
                    } else {
                        body
                    };
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                }
                if !terminated {
                    return Err(Problem::at(
                        number,
                        format!("unterminated heredoc: no line `{}` ends it", heredoc.name),
                    ));
                }
            }
        }
        instructions.push(instruction);
    }
    Ok(Document {
        instructions,
        escape: directives.escape,
    })
}

/// Splits the leading `--flag` words off an instruction's arguments, as BuildKit does:
/// quotes are removed and the escape token escapes the next character. A `--` word ends the
/// flags.
fn extract_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut i = 0;
    while let Some(&(at, ch)) = chars.get(i) {
        i += 1;
        if !in_word {
            if ch.is_whitespace() {
                continue;
            }
            if ch != '-' || chars.get(i).map(|&(_, c)| c) != Some('-') {
                return (&line[at..], flags);
            }
            in_word = true;
        }
        if let Some(q) = quote {
            if ch == q {
                quote = None;
                continue;
            }
            if ch == escape {
                match chars.get(i) {
                    Some(&(_, next)) => {
                        i += 1;
                        word.push(next);
                    }
                    None => quote = None,
                }
                continue;
            }
            word.push(ch);
            continue;
        }
        if ch.is_whitespace() {
            in_word = false;
            if word == "--" {
                return (&line[at..], flags);
            }
            if blank_ok || !word.is_empty() {
                flags.push(std::mem::take(&mut word));
            }
            blank_ok = false;
            continue;
        }
        if ch == '\'' || ch == '"' {
            quote = Some(ch);
            blank_ok = true;
            continue;
        }
        if ch == escape {
            if let Some(&(_, next)) = chars.get(i) {
                i += 1;
                word.push(next);
            }
            continue;
        }
        word.push(ch);
    }
    if in_word && word != "--" && (blank_ok || !word.is_empty()) {
        flags.push(word);
    }
    ("", flags)
}

/// Splits `ARG`/`ENV` arguments into words at white space outside quotes, keeping the quotes
/// and escapes for expansion later.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut chars = rest.chars();
    while let Some(ch) = chars.next() {
        if !in_word {
            if ch.is_whitespace() {
                continue;
            }
            in_word = true;
        }
        match quote {
            None => {
                if ch.is_whitespace() {
                    in_word = false;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if let Some(next) = chars.next() {
                        word.push(ch);
                        word.push(next);
                    }
                    continue;
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                if ch == escape && q != '\'' {
                    match chars.next() {
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                        None => quote = None,
                    }
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

// ---------------------------------------------------------------------------------------------
// Variable expansion, following BuildKit's shell lexer.
// ---------------------------------------------------------------------------------------------

/// A variable's value as far as the file shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    /// Set to this text.
    Set(String),
    /// Set to this text, which keeps references to the variables named, whose values are not
    /// known.
    Partial(String, Vec<String>),
    /// Not set: expands to nothing.
    Unset,
    /// Set outside the file (a base image's `ENV`, the build platform): references stay as
    /// written.
    Unknown,
}

/// The variables at one point of the file. Each stage starts from a copy of its parent's, so
/// the map shares what the copies have in common: a file of many stages each adding an `ARG`
/// takes memory in proportion to its size, not to its size squared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    vars: imbl::OrdMap<String, Var>,
    /// What a name the file does not set is.
    otherwise: Var,
    /// A reference to a variable whose value is not known expands to [`WILD`] rather than
    /// to itself: the text becomes a pattern of what it could be.
    wild: bool,
}

impl Scope {
    fn new(otherwise: Var) -> Self {
        Self {
            vars: imbl::OrdMap::new(),
            otherwise,
            wild: false,
        }
    }

    fn get(&self, name: &str) -> Var {
        self.vars
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.otherwise.clone())
    }

    fn expand(&self, word: &str, escape: char) -> Result<Expanded, String> {
        expand(word, escape, self.wild, &|name| self.get(name))
    }

    /// An `ARG` inside a stage: a build argument wins, then the default; without either, a
    /// redeclared global `ARG` brings its value, and a new name is set empty.
    fn declare_args(
        &mut self,
        instruction: &Instruction,
        globals: &Scope,
        build_args: &BTreeMap<String, String>,
        escape: char,
    ) -> Result<(), Problem> {
        for (key, default) in arg_words(instruction, escape)? {
            let value = if let Some(value) = build_args.get(&key) {
                Var::Set(value.clone())
            } else if let Some(default) = default {
                self.expand(&default, escape)
                    .map_err(|m| Problem::at(instruction.line, m))?
                    .into_var()
            } else if let Some(global) = globals.vars.get(&key) {
                global.clone()
            } else if self.vars.contains_key(&key) {
                continue;
            } else {
                Var::Set(String::new())
            };
            self.vars.insert(key, value);
        }
        Ok(())
    }
}

/// A word after expansion.
#[derive(Debug)]
struct Expanded {
    text: String,
    /// The text keeps a reference to a variable whose value is not known.
    unresolved: bool,
    /// The variables whose values are not known, in first-use order.
    unknown: Vec<String>,
}

impl Expanded {
    fn into_var(self) -> Var {
        if self.unresolved {
            Var::Partial(self.text, self.unknown)
        } else {
            Var::Set(self.text)
        }
    }
}

/// Stands for the value of a variable that is not known in a [`Scope::wild`] expansion.
const WILD: char = '\u{0}';

/// Expands variables in `word` and removes its quotes, as BuildKit does for `FROM`, `ARG`,
/// `ENV` and mount options. With `wild`, what is not known becomes [`WILD`].
fn expand(
    word: &str,
    escape: char,
    wild: bool,
    env: &dyn Fn(&str) -> Var,
) -> Result<Expanded, String> {
    let mut lexer = Lexer::new(word, escape, false, env);
    lexer.wild = wild;
    let (text, _) = lexer.process(None, false)?;
    Ok(Expanded {
        text,
        unresolved: lexer.unresolved,
        unknown: lexer.unknown,
    })
}

/// Shell words being collected: white space splits words, except inside quotes.
#[derive(Debug, Default)]
struct Words {
    done: Vec<String>,
    current: String,
    open: bool,
}

impl Words {
    fn push_char(&mut self, ch: char) {
        if !ch.is_whitespace() {
            self.push_raw_char(ch);
        } else if self.open && !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
            self.open = false;
        }
    }

    fn push_raw_char(&mut self, ch: char) {
        self.current.push(ch);
        self.open = true;
    }

    fn push_split(&mut self, text: &str) {
        text.chars().for_each(|c| self.push_char(c));
    }

    fn push_raw(&mut self, text: &str) {
        self.current.push_str(text);
        self.open = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// BuildKit's shell lexer: quotes, escapes and `$` expansions.
struct Lexer<'e> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    /// Keep quote characters in the result.
    raw_quotes: bool,
    /// Keep escape tokens in the result.
    raw_escapes: bool,
    env: &'e dyn Fn(&str) -> Var,
    /// A variable whose value is not known was kept as written.
    unresolved: bool,
    /// The names of those variables, in first-use order.
    unknown: Vec<String>,
    /// Such a variable becomes [`WILD`] instead of its text.
    wild: bool,
    /// How many `${...}` words the lexer is inside.
    depth: usize,
}

impl<'e> Lexer<'e> {
    fn new(text: &str, escape: char, raw_quotes: bool, env: &'e dyn Fn(&str) -> Var) -> Self {
        Self {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            raw_quotes,
            raw_escapes: false,
            env,
            unresolved: false,
            unknown: Vec::new(),
            wild: false,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// The source text from `start`, kept for a variable whose value is not known (`name`,
    /// unless the caller counted it already); [`WILD`] when the lexer is wild.
    fn keep(&mut self, start: usize, name: Option<&str>) -> String {
        self.unresolved = true;
        if let Some(name) = name {
            push_unique(&mut self.unknown, name.to_owned());
        }
        if self.wild {
            return WILD.to_string();
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// The value of `name`; a partly known value counts its unknown variables as used.
    fn lookup(&mut self, name: &str) -> Var {
        let value = (self.env)(name);
        if let Var::Partial(_, unknown) = &value {
            self.take(unknown.clone());
        }
        value
    }

    /// Processes up to `stop` (consumed) or the end; returns the text and its words.
    fn process(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.scan(stop);
        self.raw_escapes = saved;
        result
    }

    fn scan(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut text = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((text, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    words.push_split(&value);
                    text.push_str(&value);
                }
                '<' => {
                    let value = self.angle();
                    words.push_raw(&value);
                    text.push_str(&value);
                }
                '\'' => {
                    let value = self.single_quoted()?;
                    words.push_raw(&value);
                    text.push_str(&value);
                }
                '"' => {
                    let value = self.double_quoted()?;
                    words.push_raw(&value);
                    text.push_str(&value);
                }
                _ => {
                    self.pos += 1;
                    if ch != self.escape {
                        words.push_char(ch);
                        text.push(ch);
                        continue;
                    }
                    if self.raw_escapes {
                        words.push_raw_char(ch);
                        text.push(ch);
                    }
                    let Some(next) = self.bump() else {
                        break;
                    };
                    words.push_raw_char(next);
                    text.push(next);
                }
            }
        }
        match stop {
            Some(stop) => Err(format!("unexpected end of text while looking for `{stop}`")),
            None => Ok((text, words.finish())),
        }
    }

    /// Processes up to `stop` inside `${...}`.
    fn until(&mut self, stop: char, raw_escapes: bool) -> Result<String, String> {
        if self.depth == MAX_NESTING {
            return Err(format!("`${{...}}` nested more than {MAX_NESTING} deep"));
        }
        self.depth += 1;
        let result = self.process(Some(stop), raw_escapes);
        self.depth -= 1;
        match result {
            Ok((text, _)) => Ok(text),
            Err(_) if self.peek().is_none() => {
                Err(format!("syntax error: missing `{stop}` in `${{...}}`"))
            }
            Err(e) => Err(e),
        }
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut text = String::new();
        if self.raw_quotes {
            text.push('\'');
        }
        loop {
            match self.bump() {
                None => {
                    return Err(
                        "unexpected end of text while looking for the closing `'`".to_owned()
                    );
                }
                Some('\'') => {
                    if self.raw_quotes {
                        text.push('\'');
                    }
                    return Ok(text);
                }
                Some(ch) => text.push(ch),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut text = String::new();
        if self.raw_quotes {
            text.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of text while looking for the closing `\"`".to_owned()
                    );
                }
                Some('"') => {
                    self.pos += 1;
                    if self.raw_quotes {
                        text.push('"');
                    }
                    return Ok(text);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    text.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            text.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.pos += 1;
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    text.push(ch);
                }
            }
        }
    }

    /// `<<` and the blanks after it stay together, so that `<< EOF` is one word.
    fn angle(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.pos += 1;
        let mut text = "<<".to_owned();
        while let Some(ch @ (' ' | '\t' | '\r')) = self.peek() {
            text.push(ch);
            self.pos += 1;
        }
        text
    }

    /// A variable name: letters, digits and `_`; or digits; or one special parameter.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(digit) = self.peek().filter(char::is_ascii_digit) {
                    name.push(digit);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!') {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    /// `$NAME`, `${NAME}` and `${NAME<modifier>word}`; what it expands to is taken from the
    /// file's [`WORK`].
    fn dollar(&mut self) -> Result<String, String> {
        let value = self.substitution()?;
        spend(value.len())?;
        Ok(value)
    }

    fn substitution(&mut self) -> Result<String, String> {
        let start = self.pos;
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Var::Set(value) | Var::Partial(value, _) => value,
                Var::Unset => String::new(),
                Var::Unknown => self.keep(start, Some(&name)),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing `}`".to_owned()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_owned()),
            Some(_) => {}
        }
        let name = self.name();
        let mut modifier = self.bump();
        let colon = modifier == Some(':');
        if colon {
            modifier = self.bump();
        }
        match modifier {
            Some('}') if !colon => Ok(match self.lookup(&name) {
                Var::Set(value) | Var::Partial(value, _) => value,
                Var::Unset => String::new(),
                Var::Unknown => self.keep(start, Some(&name)),
            }),
            Some(op @ ('-' | '+' | '?' | '#' | '%')) => {
                let is_pattern = op == '#' || op == '%';
                if colon && is_pattern {
                    return Err(format!("unsupported modifier `:{op}` in substitution"));
                }
                // What the word does not know counts only where the word is used.
                let (word, unknown) = self.aside(|lexer| lexer.until('}', is_pattern))?;
                let value = match self.lookup(&name) {
                    // Whether a partly known value is empty, or what a pattern trims off it,
                    // is not known either.
                    Var::Partial(..) if (colon && op != '?') || is_pattern => {
                        self.take(unknown);
                        return Ok(self.keep(start, None));
                    }
                    Var::Set(value) | Var::Partial(value, _) => Some(value),
                    Var::Unset => None,
                    Var::Unknown => {
                        self.take(unknown);
                        return Ok(self.keep(start, Some(&name)));
                    }
                };
                let missing = value.as_ref().is_none_or(|v| colon && v.is_empty());
                match op {
                    '-' if missing => {
                        self.take(unknown);
                        Ok(word)
                    }
                    '+' if missing => Ok(String::new()),
                    '+' => {
                        self.take(unknown);
                        Ok(word)
                    }
                    '?' if missing => {
                        let message = if !word.is_empty() {
                            word
                        } else if value.is_none() {
                            "is not allowed to be unset".to_owned()
                        } else {
                            "is not allowed to be empty".to_owned()
                        };
                        Err(format!("{name}: {message}"))
                    }
                    '-' | '?' => Ok(value.unwrap_or_default()),
                    // A pattern that is not known trims what it may: the result is not known.
                    _ if !unknown.is_empty() => {
                        self.take(unknown);
                        Ok(self.keep(start, None))
                    }
                    _ => {
                        let value = value.unwrap_or_default();
                        let longest = word.starts_with(op);
                        let pattern = if longest {
                            &word[op.len_utf8()..]
                        } else {
                            &word[..]
                        };
                        trim_pattern(&value, pattern, longest, op == '%')
                    }
                }
            }
            Some('/') if !colon => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let (pattern, mut unknown) = self.aside(|lexer| lexer.until('/', true))?;
                let (replacement, more) = self.aside(|lexer| lexer.until('}', true))?;
                unknown.extend(more);
                match self.lookup(&name) {
                    Var::Partial(..) => {
                        self.take(unknown);
                        Ok(self.keep(start, None))
                    }
                    Var::Set(_) if !unknown.is_empty() => {
                        self.take(unknown);
                        Ok(self.keep(start, None))
                    }
                    Var::Set(value) => replace_pattern(&value, &pattern, &replacement, all),
                    Var::Unset => Ok(String::new()),
                    Var::Unknown => {
                        self.take(unknown);
                        Ok(self.keep(start, Some(&name)))
                    }
                }
            }
            _ => {
                let text: String = self.chars[start..self.pos].iter().collect();
                Err(format!("unsupported modifier in `{text}`"))
            }
        }
    }

    /// Runs `step` with a clean record of variables that are not known, and returns that
    /// record (the names; a name is there for every such variable) beside the result.
    fn aside<T>(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<(T, Vec<String>), String> {
        let unresolved = std::mem::take(&mut self.unresolved);
        let unknown = std::mem::take(&mut self.unknown);
        let result = step(self);
        self.unresolved = unresolved;
        let seen = std::mem::replace(&mut self.unknown, unknown);
        Ok((result?, seen))
    }

    /// Counts the variables that are not known of a word that is used.
    fn take(&mut self, unknown: Vec<String>) {
        if !unknown.is_empty() {
            self.unresolved = true;
        }
        for name in unknown {
            push_unique(&mut self.unknown, name);
        }
    }
}

/// One element of a shell pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Glob {
    /// `*`
    Any,
    /// `?`
    One,
    Char(char),
}

/// Reads a `${...}` pattern: `*`, `?`, and `\` escaping `*`, `?`, `\`, `}` or `/`.
fn glob(pattern: &str) -> Result<Vec<Glob>, String> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' => out.push(Glob::Any),
            '?' => out.push(Glob::One),
            '\\' => match chars.peek() {
                Some('}' | '/') => {}
                _ => match chars.next() {
                    Some(escaped @ ('*' | '?' | '\\')) => out.push(Glob::Char(escaped)),
                    _ => return Err(format!("invalid escape in pattern `{pattern}`")),
                },
            },
            _ => out.push(Glob::Char(ch)),
        }
    }
    Ok(out)
}

/// Whether `pattern` matches all of `text`; on a mismatch the last `*` takes one more
/// character, which keeps the work proportional to the lengths' product. Each step is taken
/// from the file's [`WORK`].
fn glob_matches(pattern: &[Glob], text: &[char]) -> Result<bool, String> {
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    let mut steps = 0usize;
    let matched = loop {
        if t >= text.len() {
            break pattern[p..].iter().all(|g| *g == Glob::Any);
        }
        steps += 1;
        match pattern.get(p) {
            Some(Glob::Any) => {
                last_star = Some((p, t));
                p += 1;
            }
            Some(Glob::One) => {
                p += 1;
                t += 1;
            }
            Some(Glob::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                Some((star, taken)) => {
                    last_star = Some((star, taken + 1));
                    p = star + 1;
                    t = taken + 1;
                }
                None => break false,
            },
        }
    };
    spend(steps.max(1))?;
    Ok(matched)
}

/// The work reading one file may take: bytes its variables expand to, plus steps of pattern
/// matching. Far more than any real file needs (a few thousand), and about a second's worth.
const WORK: u64 = 1 << 26;

thread_local! {
    /// The work left to the file being read on this thread.
    static WORK_LEFT: Cell<u64> = const { Cell::new(WORK) };
}

/// Takes `units` from the work left to the file; once none is left, every instruction that
/// expands or matches anything is refused.
fn spend(units: usize) -> Result<(), String> {
    WORK_LEFT.with(|left| {
        match left
            .get()
            .checked_sub(u64::try_from(units).unwrap_or(u64::MAX))
        {
            Some(rest) => {
                left.set(rest);
                Ok(())
            }
            None => {
                left.set(0);
                Err(format!(
                    "the file's variables and patterns take more than {WORK} steps to read \
                     (a value doubled past 64 MiB, or a long pattern on a long value)"
                ))
            }
        }
    })
}

/// `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`: removes the shortest or longest matching prefix
/// or suffix.
fn trim_pattern(value: &str, pattern: &str, longest: bool, suffix: bool) -> Result<String, String> {
    let pattern = glob(pattern)?;
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    let lengths: Vec<usize> = if longest {
        (0..=n).rev().collect()
    } else {
        (0..=n).collect()
    };
    for len in lengths {
        let (matched, rest) = if suffix {
            (&chars[n - len..], &chars[..n - len])
        } else {
            (&chars[..len], &chars[len..])
        };
        if glob_matches(&pattern, matched)? {
            return Ok(rest.iter().collect());
        }
    }
    Ok(value.to_owned())
}

/// `${v/p/r}` and `${v//p/r}`: replaces the leftmost longest match, or every match.
fn replace_pattern(
    value: &str,
    pattern: &str,
    replacement: &str,
    all: bool,
) -> Result<String, String> {
    let pattern = glob(pattern)?;
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    let mut out = String::new();
    let mut i = 0;
    while i <= n {
        let mut end = None;
        for candidate in (i..=n).rev() {
            if glob_matches(&pattern, &chars[i..candidate])? {
                end = Some(candidate);
                break;
            }
        }
        match end {
            Some(end) => {
                // Charged before it is written: a long replacement for each of many matches
                // would otherwise be built whole first.
                spend(replacement.len())?;
                out.push_str(replacement);
                if end == i {
                    out.extend(chars.get(i));
                    i += 1;
                } else {
                    i = end;
                }
                if !all {
                    out.extend(chars.get(i..).unwrap_or_default());
                    return Ok(out);
                }
            }
            None => {
                out.extend(chars.get(i));
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_args() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A build with no `--platform` is for the builder's own platform: on an arm64 runner,
    /// `FROM base-${TARGETARCH}` reads `base-arm64`, not `base-amd64`.
    #[test]
    fn the_default_platform_is_the_machines() {
        let name = |arch: &str, little: bool| {
            let p = Platform::of_machine(arch, little);
            format!("{}/{}/{}", p.os, p.arch, p.variant)
        };
        assert_eq!(name("x86_64", true), "linux/amd64/");
        assert_eq!(name("aarch64", true), "linux/arm64/");
        assert_eq!(name("arm", true), "linux/arm/v7");
        assert_eq!(name("powerpc64", true), "linux/ppc64le/");
        assert_eq!(name("powerpc64", false), "linux/ppc64/");
        assert_eq!(name("s390x", false), "linux/s390x/");
        assert_eq!(name("sparc64", false), "linux/amd64/");
        let arm = BuildOptions {
            build_platform: Some(Platform::of_machine("aarch64", true)),
            ..BuildOptions::default()
        };
        let info = parse_build(
            "ARG TARGETARCH\nFROM reg/base-${TARGETARCH}:1\n",
            "Dockerfile",
            &arm,
        )
        .unwrap();
        let bases: Vec<String> = info.base_images.iter().map(ToString::to_string).collect();
        assert_eq!(bases, ["reg/base-arm64:1"], "{bases:?}");
    }

    fn platforms(values: &[&str]) -> BuildOptions {
        let amd = Platform::linux_amd64();
        BuildOptions {
            platforms: values
                .iter()
                .map(|v| Platform::parse(v, &amd).unwrap())
                .collect(),
            build_platform: Some(amd),
            ..BuildOptions::default()
        }
    }

    fn unknown_platform() -> BuildOptions {
        BuildOptions::default()
    }

    fn read_ok(text: &str) -> DockerfileInfo {
        parse(text, "Dockerfile", &no_args(), None).unwrap()
    }

    fn read_err(text: &str) -> IngestError {
        parse(text, "Dockerfile", &no_args(), None).unwrap_err()
    }

    fn cache(id: &str, target: &str) -> MountUse {
        MountUse {
            id: id.to_owned(),
            target: Some(target.to_owned()),
            ..MountUse::default()
        }
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    /// The default id is the target cleaned the way BuildKit cleans it.
    #[test]
    fn default_id_is_the_cleaned_target() {
        let info = read_ok(
            "FROM python:3.12\nRUN --mount=type=cache,target=/root/.cache//pip/ pip install .\n",
        );
        assert_eq!(
            info.mounts,
            vec![cache("/root/.cache/pip", "/root/.cache/pip")]
        );
        assert_eq!(info.base_images, strings(&["python:3.12"]));
    }

    /// An `id=` replaces the default id; the target is still stored cleaned.
    #[test]
    fn custom_id_is_kept() {
        let info = read_ok(
            "FROM golang:1.22\nRUN --mount=type=cache,id=gomod,target=/go/pkg/mod/ go mod download\n",
        );
        assert_eq!(info.mounts, vec![cache("gomod", "/go/pkg/mod")]);
    }

    /// Every `--mount` of a `RUN` is read; only cache mounts are recorded, other flags are
    /// skipped.
    #[test]
    fn several_mounts_in_one_run() {
        let info = read_ok(
            "FROM alpine\n\
             RUN --network=none --mount=type=cache,target=/a --mount=type=bind,source=x,target=/x \
             --mount=type=secret,id=token --mount=type=ssh --mount=type=tmpfs,target=/t \
             --mount=type=cache,target=/b --security=insecure make\n",
        );
        assert_eq!(info.mounts, vec![cache("/a", "/a"), cache("/b", "/b")]);
    }

    /// `ro`, `readonly`, `readonly=<bool>` and `rw` set read-only the way BuildKit does; a cache
    /// mount is writable by default.
    #[test]
    fn readonly_forms() {
        let info = read_ok(
            "FROM alpine\n\
             RUN --mount=type=cache,target=/1,ro --mount=type=cache,target=/2,readonly \
             --mount=type=cache,target=/3,readonly=true --mount=type=cache,target=/4,readonly=false \
             --mount=type=cache,target=/5,ro=1 --mount=type=cache,target=/6,ro,rw \
             --mount=type=cache,target=/7,readwrite=false --mount=type=cache,target=/8 true\n",
        );
        let readonly: Vec<bool> = info.mounts.iter().map(|m| m.readonly).collect();
        assert_eq!(
            readonly,
            vec![true, true, true, false, true, false, true, false]
        );
        let err = read_err("FROM alpine\nRUN --mount=type=cache,target=/x,readonly=yes true\n");
        assert_eq!(err.line, Some(2));
    }

    /// `sharing` takes shared, private or locked in any case.
    #[test]
    fn sharing_modes() {
        let info = read_ok(
            "FROM alpine\n\
             RUN --mount=type=cache,target=/a,sharing=shared --mount=type=cache,target=/b,sharing=private \
             --mount=type=cache,target=/c,sharing=LOCKED true\n",
        );
        let sharing: Vec<Sharing> = info.mounts.iter().map(|m| m.sharing).collect();
        assert_eq!(
            sharing,
            vec![Sharing::Shared, Sharing::Private, Sharing::Locked]
        );
    }

    /// `uid`, `gid`, octal `mode` and `from` are stored; `source` is accepted.
    #[test]
    fn uid_gid_mode_and_from() {
        let info = read_ok(
            "FROM node:20 AS deps\n\
             FROM node:20\n\
             RUN --mount=type=cache,target=/home/node/.npm,uid=1000,gid=1000,mode=0755,from=deps,source=/cache npm ci\n",
        );
        let expected = MountUse {
            uid: Some(1000),
            gid: Some(1000),
            mode: Some(0o755),
            from: Some("deps".to_owned()),
            ..cache("/home/node/.npm", "/home/node/.npm")
        };
        assert_eq!(info.mounts, vec![expected]);
    }

    /// Continuation lines join, with comment and blank lines inside the continuation skipped,
    /// and an escaped escape token does not continue.
    #[test]
    fn backslash_continuations() {
        let text = "FROM alpine\n\
                    RUN --mount=type=cache,target=/var/cache/apk \\\n\
                    # a comment inside\n\
                    \n\
                    \x20   --mount=type=cache,id=x,target=/x \\  \n\
                    \x20   apk add curl\n\
                    RUN echo done \\\\\n\
                    RUN --mount=type=cache,target=/after true\n";
        let info = read_ok(text);
        assert_eq!(
            info.mounts,
            vec![
                cache("/var/cache/apk", "/var/cache/apk"),
                cache("x", "/x"),
                cache("/after", "/after")
            ]
        );
    }

    /// With `# escape=``, the backtick continues lines and a trailing backslash is text.
    #[test]
    fn backtick_escape_directive() {
        let text = "# escape=`\n\
                    FROM mcr.microsoft.com/windows/servercore:ltsc2022\n\
                    COPY . C:\\src\\\n\
                    RUN --mount=type=cache,id=nuget,target=/nuget `\n\
                    \x20   --mount=type=cache,target=/b `\n\
                    \x20   dotnet restore\n";
        let info = read_ok(text);
        assert_eq!(
            info.mounts,
            vec![cache("nuget", "/nuget"), cache("/b", "/b")]
        );
        assert_eq!(
            info.base_images,
            strings(&["mcr.microsoft.com/windows/servercore:ltsc2022"])
        );
    }

    /// Directives count only at the top: after a comment, an instruction or a blank line,
    /// `# escape=` is an ordinary comment. Directive names are case-insensitive.
    #[test]
    fn directives_only_at_the_top() {
        let late =
            "# a comment\n# escape=`\nFROM alpine\nRUN --mount=type=cache,target=/a \\\n  true\n";
        assert_eq!(read_ok(late).mounts, vec![cache("/a", "/a")]);
        let upper = "# syntax=docker/dockerfile:1\n#  ESCAPE = `\nFROM alpine\nRUN --mount=type=cache,target=/a `\n  true\n";
        assert_eq!(read_ok(upper).mounts, vec![cache("/a", "/a")]);
        let err = read_err("# escape=`\n# escape=\\\nFROM alpine\n");
        assert_eq!(err.line, Some(2));
        assert!(
            read_err("# escape=x\nFROM alpine\n")
                .message
                .contains("escape")
        );
    }

    /// Heredoc bodies are consumed: instructions inside them never count, whatever the
    /// heredoc form.
    #[test]
    fn heredoc_bodies_are_not_instructions() {
        let text = "FROM alpine\n\
                    RUN <<EOF\n\
                    FROM evil:1\n\
                    RUN --mount=type=cache,target=/evil true\n\
                    EOF\n\
                    RUN <<-EOT\n\
                    \tFROM evil:2\n\
                    \tEOT\n\
                    RUN --mount=type=cache,target=/ok <<\"QUOTED\" bash\n\
                    FROM evil:3\n\
                    QUOTED\n\
                    COPY <<one.txt <<'two.txt' /dest/\n\
                    FROM evil:4\n\
                    one.txt\n\
                    FROM evil:5\n\
                    two.txt\n\
                    RUN 3<<FD cat <&3\n\
                    FROM evil:6\n\
                    FD\n\
                    RUN <<  SPACED  > /out\n\
                    FROM evil:7\n\
                    SPACED\n\
                    ONBUILD RUN <<EOF\n\
                    FROM evil:8\n\
                    EOF\n\
                    RUN --mount=type=cache,target=/last true\n";
        let info = read_ok(text);
        assert_eq!(info.base_images, strings(&["alpine"]));
        assert_eq!(
            info.mounts,
            vec![cache("/ok", "/ok"), cache("/last", "/last")]
        );
    }

    /// What is not a heredoc is left alone: quoted `<<`, `<<<`, instructions that take no
    /// heredoc, and the exec form.
    #[test]
    fn not_heredocs() {
        let text = "FROM alpine\n\
                    RUN echo \"<<NOT\"\n\
                    RUN cat <<<word\n\
                    USER <<NOPE\n\
                    RUN [\"sh\", \"-c\", \"cat <<EOF\"]\n\
                    RUN --mount=type=cache,target=/x true\n";
        assert_eq!(read_ok(text).mounts, vec![cache("/x", "/x")]);
    }

    /// The exec form parses, with flags before the JSON array.
    #[test]
    fn json_form_run() {
        let text = "FROM alpine\n\
                    RUN [\"sh\", \"-c\", \"echo hello\"]\n\
                    RUN --mount=type=cache,target=/root/.cache [\"pip\", \"install\", \".\"]\n\
                    CMD [\"sh\"]\n";
        assert_eq!(
            read_ok(text).mounts,
            vec![cache("/root/.cache", "/root/.cache")]
        );
    }

    /// Global `ARG`s expand in `FROM`: defaults, build-arg overrides, missing values as empty,
    /// and the `:-`/`:+`/`-` forms.
    #[test]
    fn arg_substitution_in_from() {
        let text = "ARG VERSION=3.12\n\
                    ARG VARIANT\n\
                    ARG REGISTRY=\n\
                    ARG SUFFIX=slim\n\
                    FROM ${REGISTRY:-docker.io/library}/python:${VERSION}${VARIANT:+-$VARIANT} AS a\n\
                    FROM node:$NODE${VARIANT-x} AS b\n\
                    FROM base-${SUFFIX:+$SUFFIX-x}${MISSING:-fallback}\n\
                    COPY --from=a /a /a\n\
                    COPY --from=b /b /b\n";
        let info = read_ok(text);
        assert_eq!(
            info.base_images,
            strings(&[
                "docker.io/library/python:3.12",
                "node:x",
                "base-slim-xfallback"
            ])
        );
        let overridden = parse(
            text,
            "Dockerfile",
            &args(&[
                ("VERSION", "3.13"),
                ("VARIANT", "alpine"),
                ("REGISTRY", "mirror.io"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            overridden.base_images,
            strings(&[
                "mirror.io/python:3.13-alpine",
                "node:alpine",
                "base-slim-xfallback"
            ])
        );
    }

    /// A global `ARG` default may use earlier global args; quotes in values are removed.
    #[test]
    fn arg_defaults_chain() {
        let text = "ARG REPO=\"team/app\"\nARG IMAGE=registry.io/${REPO}:'1.0'\nFROM $IMAGE\n";
        assert_eq!(
            read_ok(text).base_images,
            strings(&["registry.io/team/app:1.0"])
        );
    }

    /// An `ARG` doubled forty times, or a long pattern matched along a long value, runs out of
    /// the file's work at the instruction that overdoes it; what comes before is read, and so
    /// is a value that only grows large (ten megabytes) within it.
    #[test]
    fn a_file_that_takes_too_much_work_is_refused() {
        let mut text = "FROM alpine\nARG A=x\n".to_owned();
        for _ in 0..40 {
            text.push_str("ARG A=${A}${A}\n");
        }
        text.push_str("RUN --mount=type=cache,target=/$A echo\n");
        let err = read_err(&text);
        assert!(err.message.contains("steps to read"), "{}", err.message);
        assert!(
            err.line.is_some_and(|line| line > 20 && line < 42),
            "{err:?}"
        );

        let mut text = "FROM alpine\nARG A=a\n".to_owned();
        for _ in 0..10 {
            text.push_str("ARG A=$A$A\n");
        }
        text.push_str("RUN --mount=type=cache,id=${A//*b/x},target=/c echo\n");
        let err = read_err(&text);
        assert!(err.message.contains("steps to read"), "{}", err.message);

        // Each replacement is charged before it is written.
        let mut text = "FROM alpine\nARG A=a\nARG R=r\n".to_owned();
        for _ in 0..12 {
            text.push_str("ARG A=$A$A\n");
        }
        for _ in 0..20 {
            text.push_str("ARG R=$R$R\n");
        }
        text.push_str("ARG B=${A//a/$R}\nRUN --mount=type=cache,target=/$B echo\n");
        let err = read_err(&text);
        assert!(err.message.contains("steps to read"), "{}", err.message);
        assert_eq!(err.line, Some(36));

        let mut text = format!("FROM alpine\nARG A={}\nARG B=", "a".repeat(1000));
        for _ in 0..10_000 {
            text.push_str("$A");
        }
        text.push_str("\nRUN --mount=type=cache,id=${B%%b*},target=/c echo\n");
        let mounts = read_ok(&text).mounts;
        assert_eq!(mounts[0].id.len(), 10_000_000);
    }

    /// A long value (a build argument, text the file spells out) is shortened by a pattern as
    /// BuildKit shortens it.
    #[test]
    fn long_whole_values_take_patterns() {
        let big: Vec<String> = (0..80)
            .map(|i| format!("registry.example/img{i}:1.0"))
            .collect();
        let big = big.join(",");
        assert!(big.len() > crate::model::limits::NAME_BYTES);
        let text = format!(
            "FROM alpine\nARG BIG\nARG FIRST=${{BIG%%,*}}\nARG LONG={big}\n\
             RUN --mount=type=cache,id=pkg-${{FIRST##*/}},target=/var/cache/apk \
             --mount=type=cache,id=${{LONG%%:*}},target=/l echo\n"
        );
        let build_args = BTreeMap::from([("BIG".to_owned(), big)]);
        let mounts = parse(&text, "Dockerfile", &build_args, None)
            .unwrap()
            .mounts;
        let ids: Vec<&str> = mounts.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["pkg-img0:1.0", "registry.example/img0"]);
    }

    /// A chain of stages, each adding an `ARG`, reads every value down the chain: each stage
    /// starts from its parent's variables.
    #[test]
    fn a_long_chain_of_stages_keeps_every_arg() {
        let mut text = "FROM alpine AS s0\n".to_owned();
        for i in 1..500 {
            text.push_str(&format!("FROM s{} AS s{i}\nARG A{i}=v{i}\n", i - 1));
        }
        text.push_str("RUN --mount=type=cache,target=/$A1/$A250/$A499 echo\n");
        assert_eq!(
            read_ok(&text).mounts,
            vec![cache("/v1/v250/v499", "/v1/v250/v499")]
        );
    }

    /// `${...}` words nested deeper than the reader follows are an error at the instruction,
    /// not a stack overflow; nesting up to the bound reads as before.
    #[test]
    fn deep_nesting_is_an_error() {
        let nested = |depth: usize| {
            format!(
                "FROM scratch\nARG X={}v{}\nRUN --mount=type=cache,target=/$X echo\n",
                "${A:-".repeat(depth),
                "}".repeat(depth)
            )
        };
        assert_eq!(
            read_ok(&nested(MAX_NESTING)).mounts,
            vec![cache("/v", "/v")]
        );
        let err = read_err(&nested(100_000));
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("nested"), "{}", err.message);
    }

    /// Shell pattern forms `#`, `%` and `/` work in `FROM` as in BuildKit.
    #[test]
    fn pattern_substitutions() {
        let text = "ARG FULL=golang:1.22.3-alpine\n\
                    FROM ${FULL%-*} AS a\n\
                    FROM ${FULL%%.*} AS b\n\
                    FROM example/${FULL#*:} AS c\n\
                    FROM ${FULL/alpine/bookworm}\n\
                    COPY --from=a / /\nCOPY --from=b / /\nCOPY --from=c / /\n";
        assert_eq!(
            read_ok(text).base_images,
            strings(&[
                "golang:1.22.3",
                "golang:1",
                "example/1.22.3-alpine",
                "golang:1.22.3-bookworm"
            ])
        );
    }

    /// `ARG` and `ENV` inside a stage feed mount options; redeclaring a global `ARG` imports
    /// its value; build args override stage defaults; `ENV` pairs see earlier values.
    #[test]
    fn stage_variables_in_mount_options() {
        let text = "ARG CACHE_SCOPE=web\n\
                    FROM alpine\n\
                    ARG CACHE_SCOPE\n\
                    ARG TOOL=npm UID\n\
                    ENV HOME_DIR=/home/app PREFIX=old\n\
                    ENV PREFIX=new LABEL=$PREFIX\n\
                    ENV OLDSTYLE value with spaces\n\
                    RUN --mount=type=cache,id=${CACHE_SCOPE}-${TOOL},target=$HOME_DIR/.${TOOL} \
                    --mount=type=cache,id=$LABEL-$PREFIX,target=/p,uid=${UID:-1000} true\n";
        let info = read_ok(text);
        let mut second = cache("old-new", "/p");
        second.uid = Some(1000);
        assert_eq!(
            info.mounts,
            vec![cache("web-npm", "/home/app/.npm"), second.clone()]
        );
        let info = parse(
            text,
            "Dockerfile",
            &args(&[("TOOL", "pnpm"), ("CACHE_SCOPE", "api")]),
            None,
        )
        .unwrap();
        assert_eq!(
            info.mounts,
            vec![cache("api-pnpm", "/home/app/.pnpm"), second]
        );
    }

    /// Without redeclaration a global `ARG` is not visible in a stage, and an `ARG` without a
    /// value expands to nothing.
    #[test]
    fn global_args_need_redeclaring() {
        let text = "ARG ID=global\nFROM scratch\nARG EMPTY\nRUN --mount=type=cache,id=x${ID}${EMPTY}y,target=/c true\n";
        assert_eq!(read_ok(text).mounts, vec![cache("xy", "/c")]);
    }

    /// A variable the file never sets may come from the base image's `ENV`: it is kept as
    /// written rather than guessed.
    #[test]
    fn image_variables_are_kept_as_written() {
        let text = "FROM golang:1.22\nRUN --mount=type=cache,target=$GOPATH/pkg/mod,uid=${UID:-1000} go build\n";
        assert_eq!(
            read_ok(text).mounts,
            vec![cache("$GOPATH/pkg/mod", "$GOPATH/pkg/mod")],
            "a number that is not known stays unset"
        );
    }

    /// A child stage inherits its parent stage's `ARG` and `ENV` values.
    #[test]
    fn child_stages_inherit_variables() {
        let text = "FROM alpine AS base\nENV CACHE=/var/cache/app\nFROM base\nRUN --mount=type=cache,target=${CACHE} true\n";
        assert_eq!(
            read_ok(text).mounts,
            vec![cache("/var/cache/app", "/var/cache/app")]
        );
    }

    /// Stage names are not base images, match case-insensitively, and `scratch` is no image.
    #[test]
    fn the_frontend_is_found_as_buildkit_finds_it() {
        let image = "registry.example.com/team/frontend:1";
        for text in [
            format!("# syntax={image}\nFROM alpine\n"),
            format!("\u{feff}#!/usr/bin/env buildctl\n#  SYNTAX = {image} --opt x\nFROM alpine\n"),
            format!("# check=skip=all\n# syntax={image}\nFROM alpine\n"),
            format!("// syntax={image}\nFROM alpine\n"),
            format!("{{\"syntax\": \"{image}\"}}"),
        ] {
            assert_eq!(detect_syntax(&text).as_deref(), Some(image), "{text}");
        }
        for text in [
            format!("FROM alpine\n# syntax={image}\n"),
            format!("# hello\n# syntax={image}\nFROM alpine\n"),
            "#syntax=\nFROM alpine\n".to_owned(),
            "{\"syntax\": 1}".to_owned(),
        ] {
            assert_eq!(detect_syntax(&text), None, "{text}");
        }
    }

    #[test]
    fn the_frontend_image_is_a_base_image() {
        let text = "# syntax=registry.example.com/team/frontend:1\nFROM alpine\n";
        assert_eq!(
            read_ok(text).base_images,
            strings(&["registry.example.com/team/frontend:1", "alpine"])
        );
        let args = BTreeMap::from([(
            "BUILDKIT_SYNTAX".to_owned(),
            "other.example.com/frontend@sha256:".to_owned() + &"a".repeat(64),
        )]);
        let info = parse(text, "Dockerfile", &args, None).unwrap();
        assert_eq!(info.base_images[0], args["BUILDKIT_SYNTAX"]);
        assert_eq!(info.base_images.len(), 2);
        assert_eq!(read_ok("FROM alpine\n").base_images, strings(&["alpine"]));
    }

    #[test]
    fn stage_names_are_not_base_images() {
        let text = "FROM golang:1.22 AS Build\n\
                    FROM build AS test\n\
                    FROM scratch\n\
                    COPY --from=BUILD /out /out\n\
                    COPY --from=test /report /report\n\
                    COPY --from=scratch / /\n";
        let info = read_ok(text);
        assert_eq!(info.base_images, strings(&["golang:1.22"]));
        assert_eq!(info.stages, strings(&["build", "test"]));
    }

    /// Only stages the target needs count: their base images and mounts, in first-use order.
    #[test]
    fn target_selects_needed_stages() {
        let text = "FROM golang:1.22 AS build\n\
                    RUN --mount=type=cache,id=gomod,target=/go/pkg/mod go build\n\
                    FROM node:20 AS frontend\n\
                    RUN --mount=type=cache,target=/root/.npm npm ci\n\
                    FROM golangci/golangci-lint:v1.59 AS lint\n\
                    RUN --mount=type=cache,target=/root/.cache/golangci-lint golangci-lint run\n\
                    FROM gcr.io/distroless/static AS release\n\
                    COPY --from=frontend /dist /dist\n\
                    COPY --from=build /out/app /app\n";
        let info = read_ok(text);
        assert_eq!(
            info.base_images,
            strings(&["golang:1.22", "node:20", "gcr.io/distroless/static"])
        );
        assert_eq!(
            info.mounts,
            vec![
                cache("gomod", "/go/pkg/mod"),
                cache("/root/.npm", "/root/.npm")
            ]
        );
        let lint = parse(text, "Dockerfile", &no_args(), Some("LINT")).unwrap();
        assert_eq!(lint.base_images, strings(&["golangci/golangci-lint:v1.59"]));
        assert_eq!(
            lint.mounts,
            vec![cache(
                "/root/.cache/golangci-lint",
                "/root/.cache/golangci-lint"
            )]
        );
        let build = parse(text, "Dockerfile", &no_args(), Some("build")).unwrap();
        assert_eq!(build.base_images, strings(&["golang:1.22"]));
        assert_eq!(
            info.stages,
            strings(&["build", "frontend", "lint", "release"])
        );
    }

    /// `COPY --from` an image is a base image; by index or name it pulls in the stage.
    #[test]
    fn copy_from_images_and_indexes() {
        let text = "FROM alpine:3.20\n\
                    RUN --mount=type=cache,target=/first true\n\
                    FROM debian:12 AS unused\n\
                    FROM scratch\n\
                    COPY --from=busybox:1.36 /bin/busybox /busybox\n\
                    COPY --chmod=755 --from=0 /etc/os-release /os\n";
        let info = read_ok(text);
        assert_eq!(info.base_images, strings(&["alpine:3.20", "busybox:1.36"]));
        assert_eq!(info.mounts, vec![cache("/first", "/first")]);
        let err = read_err("FROM alpine\nCOPY --from=7 /a /a\n");
        assert_eq!(err.line, Some(2));
    }

    /// `from=` of any mount type pulls in a stage or names a base image.
    #[test]
    fn mount_from_pulls_in_stages_and_images() {
        let text = "FROM node:20 AS assets\n\
                    RUN --mount=type=cache,target=/root/.npm npm ci\n\
                    FROM python:3.12\n\
                    RUN --mount=type=bind,from=assets,source=/dist,target=/dist \
                    --mount=type=bind,from=ghcr.io/astral-sh/uv:0.4,source=/uv,target=/bin/uv \
                    --mount=type=cache,from=busybox:1.36,target=/seeded uv sync\n";
        let info = read_ok(text);
        assert_eq!(
            info.base_images,
            strings(&[
                "node:20",
                "python:3.12",
                "ghcr.io/astral-sh/uv:0.4",
                "busybox:1.36"
            ])
        );
        let mut seeded = cache("/seeded", "/seeded");
        seeded.from = Some("busybox:1.36".to_owned());
        assert_eq!(info.mounts, vec![cache("/root/.npm", "/root/.npm"), seeded]);
    }

    /// `BUILDKIT_CACHE_MOUNT_NS` sets the namespace of every cache mount.
    #[test]
    fn namespace_from_build_arg() {
        let text = "FROM alpine\nRUN --mount=type=cache,target=/a --mount=type=cache,id=b,target=/b true\n";
        let info = parse(
            text,
            "Dockerfile",
            &args(&[("BUILDKIT_CACHE_MOUNT_NS", "team-a")]),
            None,
        )
        .unwrap();
        assert!(info.mounts.iter().all(|m| m.namespace == "team-a"));
        assert!(read_ok(text).mounts.iter().all(|m| m.namespace.is_empty()));
    }

    /// The same mount used twice is recorded once.
    #[test]
    fn identical_mounts_are_deduplicated() {
        let text = "FROM alpine AS a\n\
                    RUN --mount=type=cache,target=/c true\n\
                    RUN --mount=type=cache,target=/c/ --mount=type=cache,target=/c,sharing=locked true\n\
                    FROM a\n\
                    RUN --mount=type=cache,target=/c true\n";
        let mut locked = cache("/c", "/c");
        locked.sharing = Sharing::Locked;
        assert_eq!(read_ok(text).mounts, vec![cache("/c", "/c"), locked]);
    }

    /// The automatic platform args default to `linux/amd64`, come from `--platform` (one
    /// build per platform, counted together), and are overridden by build args.
    #[test]
    fn platform_args() {
        let text = "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n\
                    FROM alpine AS base-amd64\n\
                    RUN --mount=type=cache,target=/amd true\n\
                    FROM alpine:edge AS base-arm64\n\
                    RUN --mount=type=cache,target=/arm true\n\
                    FROM base-${TARGETARCH}\n\
                    COPY --from=build /out /out\n";
        let info = read_ok(text);
        assert_eq!(info.base_images, strings(&["golang:1.22", "alpine"]));
        assert_eq!(info.mounts, vec![cache("/amd", "/amd")]);
        assert!(info.unresolved_base_images.is_empty() && info.warnings.is_empty());

        let arm = parse_build(text, "Dockerfile", &platforms(&["linux/arm64"])).unwrap();
        assert_eq!(arm.base_images, strings(&["golang:1.22", "alpine:edge"]));
        assert_eq!(arm.mounts, vec![cache("/arm", "/arm")]);

        let both = parse_build(text, "Dockerfile", &platforms(&["linux/amd64", "arm64"])).unwrap();
        assert_eq!(
            both.mounts,
            vec![cache("/amd", "/amd"), cache("/arm", "/arm")]
        );

        let by_arg = parse(text, "Dockerfile", &args(&[("TARGETARCH", "arm64")]), None).unwrap();
        assert_eq!(by_arg.mounts, vec![cache("/arm", "/arm")]);
    }

    /// Every automatic platform arg has BuildKit's value, the build platform's apart from the
    /// target platform's.
    #[test]
    fn platform_arg_values() {
        let text = "FROM scratch\n\
                    ARG BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT\n\
                    ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT\n\
                    RUN --mount=type=cache,target=/c,id=$BUILDPLATFORM+$BUILDOS+$BUILDARCH+$BUILDVARIANT true\n\
                    RUN --mount=type=cache,target=/c,id=$TARGETPLATFORM+$TARGETOS+$TARGETARCH+$TARGETVARIANT true\n";
        let info = parse_build(text, "Dockerfile", &platforms(&["linux/arm/v6"])).unwrap();
        assert_eq!(
            info.mounts,
            vec![
                cache("linux/amd64+linux+amd64+", "/c"),
                cache("linux/arm/v6+linux+arm+v6", "/c")
            ]
        );
    }

    /// `--platform` values are read as containerd reads them.
    #[test]
    fn platform_values() {
        let amd = Platform::linux_amd64();
        let shown = |v: &str| Platform::parse(v, &amd).map(|p| p.to_string());
        assert_eq!(shown("linux/arm64").unwrap(), "linux/arm64");
        assert_eq!(shown("Linux/AARCH64/v8").unwrap(), "linux/arm64");
        assert_eq!(shown("linux/arm").unwrap(), "linux/arm/v7");
        assert_eq!(shown("linux/armhf").unwrap(), "linux/arm/v7");
        assert_eq!(shown("x86_64").unwrap(), "linux/amd64");
        assert_eq!(shown("windows").unwrap(), "windows/amd64");
        assert_eq!(shown("local").unwrap(), "linux/amd64");
        assert_eq!(shown("linux/riscv64").unwrap(), "linux/riscv64");
        for bad in ["", "linux/", "a/b/c/d", "linux/$ARCH", "nonsense"] {
            assert!(Platform::parse(bad, &amd).is_err(), "{bad:?}");
        }
    }

    /// `${VAR:+word}`, `${VAR:-word}`, `${VAR}` and `$VAR` in `FROM`, set or not.
    #[test]
    fn defaults_and_alternatives_in_from() {
        let text = "ARG DEBUG\nARG BASE\nARG OS=linux\n\
                    FROM alpine AS app-linux\n\
                    RUN --mount=type=cache,target=/plain true\n\
                    FROM app-linux AS app-linux-debug\n\
                    RUN --mount=type=cache,target=/debug true\n\
                    FROM app-$OS${DEBUG:+-debug} AS app\n\
                    FROM ${BASE:-app}\n";
        assert_eq!(read_ok(text).mounts, vec![cache("/plain", "/plain")]);
        let debug = parse(text, "Dockerfile", &args(&[("DEBUG", "1")]), None).unwrap();
        assert_eq!(
            debug.mounts,
            vec![cache("/plain", "/plain"), cache("/debug", "/debug")]
        );
        let image = parse(text, "Dockerfile", &args(&[("BASE", "busybox")]), None).unwrap();
        assert_eq!(image.base_images, strings(&["busybox"]));
        assert!(image.mounts.is_empty());
    }

    /// A `FROM` whose value is not known (the platform is not known here) warns with its line
    /// and the unknown name, and counts the mounts of every stage it could be, with each
    /// candidate's variables and `ONBUILD` triggers; stages whose names cannot fit stay out.
    #[test]
    fn unresolved_from_counts_every_candidate() {
        let text = "FROM alpine AS base-amd64\n\
                    ENV C=/amd\n\
                    ONBUILD RUN --mount=type=cache,target=/onbuild-amd true\n\
                    FROM alpine AS base-arm64\n\
                    ENV C=/arm\n\
                    FROM alpine AS other\n\
                    RUN --mount=type=cache,target=/other true\n\
                    FROM base-${TARGETARCH:-amd64}${DEBUG:+-debug}\n\
                    RUN --mount=type=cache,target=$C true\n";
        let info = parse_build(text, "ci/Dockerfile", &unknown_platform()).unwrap();
        assert_eq!(
            info.mounts,
            vec![
                cache("/onbuild-amd", "/onbuild-amd"),
                cache("/amd", "/amd"),
                cache("/arm", "/arm"),
                cache("$C", "$C"),
            ],
            "each candidate, and an image whose ENV is not known"
        );
        assert_eq!(
            info.unresolved_base_images,
            strings(&["base-${TARGETARCH:-amd64}"])
        );
        let shown: Vec<String> = info.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "`ci/Dockerfile` line 8: `FROM base-${TARGETARCH:-amd64}${DEBUG:+-debug}`: the value of \
              `TARGETARCH` is not known; counting the cache mounts of every stage it could be: \
              base-amd64, base-arm64"
            ]
        );
    }

    /// A global `ARG` whose default is not known still leads to every stage it could name.
    #[test]
    fn unresolved_from_through_a_global_arg() {
        let text = "ARG BASE=base-$TARGETARCH\n\
                    FROM alpine AS base-arm64\n\
                    RUN --mount=type=cache,target=/arm true\n\
                    FROM $BASE\n";
        let info = parse_build(text, "Dockerfile", &unknown_platform()).unwrap();
        assert_eq!(info.mounts, vec![cache("/arm", "/arm")]);
        assert!(info.warnings[0].message.contains("`TARGETARCH`"));
    }

    /// A partly known value may be empty, and a pattern may trim any of it: `${V:+...}` and
    /// `${V%...}` of such a value are not known.
    #[test]
    fn partly_known_values_in_substitutions() {
        let text = "ARG V=$TARGETVARIANT\n\
                    FROM alpine AS base\n\
                    RUN --mount=type=cache,target=/plain true\n\
                    FROM alpine AS base-v7\n\
                    RUN --mount=type=cache,target=/v7 true\n\
                    FROM base${V:+-$V}\n";
        let info = parse_build(text, "Dockerfile", &unknown_platform()).unwrap();
        assert_eq!(
            info.mounts,
            vec![cache("/plain", "/plain"), cache("/v7", "/v7")]
        );
        let trimmed = text.replace("${V:+-$V}", "${V%%7}");
        let info = parse_build(&trimmed, "Dockerfile", &unknown_platform()).unwrap();
        assert_eq!(info.mounts.len(), 2, "{:?}", info.mounts);
    }

    /// A word a substitution does not use does not make the result unknown.
    #[test]
    fn unused_words_do_not_make_from_unknown() {
        let text = "ARG IMG=alpine\nFROM ${IMG:-$TARGETARCH}\nFROM ${IMG:+$IMG}\nFROM ${NONE:+$TARGETOS}x\n";
        let info = parse_build(text, "Dockerfile", &unknown_platform()).unwrap();
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        let pattern = "ARG IMG=alpine\nFROM ${IMG#$TARGETARCH}\n";
        let info = parse_build(pattern, "Dockerfile", &unknown_platform()).unwrap();
        assert_eq!(
            info.unresolved_base_images,
            strings(&["${IMG#$TARGETARCH}"])
        );
        assert_eq!(
            info.warnings.len(),
            1,
            "a pattern that is not known trims what it may"
        );
    }

    /// A problem in a stage the build only may run is a warning, so the rest is still
    /// counted; in a stage it surely runs it stays an error.
    #[test]
    fn problems_in_maybe_stages_are_warnings() {
        let text = "FROM alpine AS base-amd64\n\
                    RUN --mount=type=cache,target=/x,sharing=bogus true\n\
                    FROM alpine AS base-arm64\n\
                    RUN --mount=type=cache,target=/arm true\n\
                    FROM base-$TARGETARCH\n";
        let info = parse_build(text, "Dockerfile", &unknown_platform()).unwrap();
        assert_eq!(info.mounts, vec![cache("/arm", "/arm")]);
        assert_eq!(info.warnings.len(), 2, "{:?}", info.warnings);
        assert!(info.warnings[1].message.contains("bogus"));
        assert_eq!(read_err(text).line, Some(2));
    }

    /// An image that is not a reference, in a stage the build may not run, is a warning.
    #[test]
    fn bad_images_in_maybe_stages_are_warnings() {
        let text = "FROM Not_A_Reference:: AS broken\nFROM alpine AS good\n";
        let info = parse(text, "Dockerfile", &no_args(), Some("release")).unwrap();
        assert_eq!(info.base_images, strings(&["alpine"]));
        assert!(
            info.warnings[1].message.contains("Not_A_Reference"),
            "{:?}",
            info.warnings
        );
        let sure = parse(text, "Dockerfile", &no_args(), Some("broken")).unwrap();
        assert_eq!(
            sure.base_images,
            strings(&["Not_A_Reference::"]),
            "left to the caller"
        );
    }

    /// A target the file does not have is not a refusal: it warns, naming the target, and
    /// counts the mounts of every stage.
    #[test]
    fn unknown_target_counts_every_stage() {
        let text = "FROM alpine AS build\nRUN --mount=type=cache,target=/b true\n\
                    FROM alpine AS test\nRUN --mount=type=cache,target=/t,sharing=nonsense true\n";
        let info = parse(text, "ci/Dockerfile", &no_args(), Some("release")).unwrap();
        assert_eq!(info.mounts, vec![cache("/b", "/b")]);
        assert_eq!(info.warnings.len(), 2, "{:?}", info.warnings);
        let warning = info.warnings[0].to_string();
        assert!(
            warning.starts_with("`ci/Dockerfile`: target stage `release` is not in the file (stages are build, test)"),
            "{warning}"
        );
    }

    /// `ONBUILD` triggers of a parent stage run in the child: their mounts count there only.
    #[test]
    fn onbuild_triggers_run_in_child_stages() {
        let text = "FROM alpine AS builder\n\
                    ONBUILD RUN --mount=type=cache,target=/onbuild true\n\
                    ONBUILD COPY --from=busybox:1.36 /bin/busybox /bin/\n\
                    FROM builder\n";
        let info = read_ok(text);
        assert_eq!(info.mounts, vec![cache("/onbuild", "/onbuild")]);
        assert_eq!(info.base_images, strings(&["alpine", "busybox:1.36"]));
        let parent = parse(text, "Dockerfile", &no_args(), Some("builder")).unwrap();
        assert!(parent.mounts.is_empty());
    }

    /// Mount errors in stages the target does not build are not reported, as in BuildKit.
    #[test]
    fn unused_stages_are_not_validated() {
        let text = "FROM alpine AS broken\nRUN --mount=type=cache,sharing=bogus,target=/x true\nFROM alpine\n";
        assert!(read_ok(text).mounts.is_empty());
    }

    /// A cache mount without a target is an error at the instruction's first line.
    #[test]
    fn error_cache_mount_without_target() {
        let err = read_err("FROM alpine\n\nRUN --mount=type=cache,id=x \\\n    true\n");
        assert_eq!(
            (err.source_name.as_str(), err.line),
            ("Dockerfile", Some(3))
        );
        assert!(err.message.contains("target"), "{}", err.message);
    }

    /// An unknown `sharing` value is an error.
    #[test]
    fn error_bad_sharing() {
        let err =
            read_err("FROM alpine\nRUN --mount=type=cache,target=/x,sharing=exclusive true\n");
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("sharing=exclusive"), "{}", err.message);
    }

    /// Non-numeric uid/gid and non-octal modes are errors.
    #[test]
    fn error_bad_uid_gid_mode() {
        for bad in [
            "uid=root",
            "gid=-1",
            "uid=+5",
            "mode=0789",
            "mode=rwx",
            "uid=4294967296",
        ] {
            let err = read_err(&format!(
                "FROM alpine\nRUN --mount=type=cache,target=/x,{bad} true\n"
            ));
            assert_eq!(err.line, Some(2), "{bad}");
        }
    }

    /// A heredoc that never ends is an error at the line that opened it.
    #[test]
    fn error_unterminated_heredoc() {
        let err = read_err("FROM alpine\nRUN true\nRUN <<EOF\necho hi\nEOFX\n");
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("EOF"), "{}", err.message);
        let chomp = read_err("FROM alpine\nRUN <<EOF\n\tEOF\n");
        assert_eq!(chomp.line, Some(2), "only <<- ignores leading tabs");
    }

    /// A file without `FROM` is an error.
    #[test]
    fn error_no_from() {
        assert!(read_err("").message.contains("FROM"));
        assert!(
            read_err("# just a comment\nARG A=1\n")
                .message
                .contains("FROM")
        );
        let err = read_err("ARG A=1\nRUN true\nFROM alpine\n");
        assert_eq!(err.line, Some(2));
    }

    /// Variables in `--from` are rejected, as BuildKit rejects them.
    #[test]
    fn error_variables_in_from() {
        let err = read_err("ARG S=x\nFROM alpine\nCOPY --from=$S /a /a\n");
        assert_eq!(err.line, Some(3));
        let err = read_err("FROM alpine\nRUN --mount=type=bind,from=${S},target=/s true\n");
        assert_eq!(err.line, Some(2));
    }

    /// Expansion errors (`${NAME:?}`, a bad substitution) point at the instruction.
    #[test]
    fn error_in_expansion() {
        let err = read_err("ARG VERSION\nFROM python:${VERSION:?required}\n");
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("VERSION: required"), "{}", err.message);
        let err = read_err("FROM alpine\nENV A=1\nRUN --mount=type=cache,target=/${} true\n");
        assert_eq!(err.line, Some(3));
        let ok = parse(
            "ARG VERSION\nFROM python:${VERSION:?required}\n",
            "Dockerfile",
            &args(&[("VERSION", "3.12")]),
            None,
        )
        .unwrap();
        assert_eq!(ok.base_images, strings(&["python:3.12"]));
    }

    /// Shell patterns match like BuildKit's: `*`, `?`, escapes, and no blow-up on many stars.
    #[test]
    fn glob_patterns() {
        let matches = |p: &str, t: &str| {
            glob_matches(&glob(p).unwrap(), &t.chars().collect::<Vec<_>>()).unwrap()
        };
        assert!(matches("a*c", "abbbc"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("\\*x", "*x"));
        assert!(!matches("\\*x", "yx"));
        assert!(matches("*", ""));
        assert!(!matches(&"*a".repeat(30), &"a".repeat(29)));
        assert!(glob("a\\").is_err());
        assert_eq!(trim_pattern("a.b.c", "*.", true, false).unwrap(), "c");
        assert_eq!(trim_pattern("a.b.c", "*.", false, false).unwrap(), "b.c");
        assert_eq!(replace_pattern("a-b-c", "-", "+", true).unwrap(), "a+b+c");
        assert_eq!(replace_pattern("a-b-c", "-", "+", false).unwrap(), "a+b-c");
    }

    /// Error line numbers count continuation and heredoc lines before the instruction.
    #[test]
    fn error_lines_count_heredocs_and_continuations() {
        let text = "FROM alpine\r\n\
                    RUN <<EOF\r\n\
                    one\r\n\
                    EOF\r\n\
                    RUN a \\\r\n\
                    \x20 b\r\n\
                    RUN --mount=type=cache,target=/x,uid=me true\r\n";
        assert_eq!(read_err(text).line, Some(7));
    }

    /// A byte-order mark does not hide the first directive, and bad stage names are errors.
    #[test]
    fn byte_order_mark_and_stage_names() {
        let text = "\u{feff}# escape=`\nFROM alpine\nRUN --mount=type=cache,target=/a `\n  true\n";
        assert_eq!(read_ok(text).mounts, vec![cache("/a", "/a")]);
        assert_eq!(read_err("FROM alpine AS 1st\n").line, Some(1));
        assert_eq!(read_err("FROM alpine AS\n").line, Some(1));
    }

    /// Flags keep quoted values whole and stop at `--`; words keep quotes for expansion.
    #[test]
    fn flags_and_words_split_like_buildkit() {
        let (rest, flags) = extract_flags(
            "--mount=\"type=cache,target=/a b\" --network=none -- --x y",
            '\\',
        );
        assert_eq!(
            flags,
            strings(&["--mount=type=cache,target=/a b", "--network=none"])
        );
        assert_eq!(rest.trim(), "--x y");
        assert_eq!(
            parse_words("A=\"x y\" B='z' C=a\\ b", '\\'),
            strings(&["A=\"x y\"", "B='z'", "C=a\\ b"])
        );
        assert_eq!(
            csv_fields("type=cache,\"target=/a,b\"").unwrap(),
            strings(&["type=cache", "target=/a,b"])
        );
        assert!(csv_fields("target=/a\"b").is_err());
    }

    /// Heredoc words are found as BuildKit finds them, terminators unquoted.
    #[test]
    fn heredoc_words() {
        let names = |line: &str| -> Vec<(String, bool)> {
            heredocs(line)
                .into_iter()
                .map(|h| (h.name, h.chomp))
                .collect()
        };
        assert_eq!(names("RUN <<EOF"), vec![("EOF".to_owned(), false)]);
        assert_eq!(names("RUN <<-'E O F'"), vec![("E O F".to_owned(), true)]);
        assert_eq!(names("RUN <<eo\\'f"), vec![("eo'f".to_owned(), false)]);
        assert_eq!(
            names("COPY <<a <<\"b\" /"),
            vec![("a".to_owned(), false), ("b".to_owned(), false)]
        );
        assert_eq!(names("RUN <<$EOF"), vec![("$EOF".to_owned(), false)]);
        assert!(
            names("RUN echo it's <<EOF").is_empty(),
            "BuildKit's lexer rejects the line"
        );
        assert!(names("RUN echo <<EOF<x").is_empty());
    }

    /// A python app: pip cache mount, a `COPY --from` image, a test stage not built by default.
    #[test]
    fn fixture_python_pip() {
        let text = include_str!("../../tests/fixtures/dockerfiles/python-pip.Dockerfile");
        let info = parse(text, "python-pip.Dockerfile", &no_args(), None).unwrap();
        assert_eq!(info.stages, strings(&["base", "deps", "test", "runtime"]));
        assert_eq!(
            info.base_images,
            strings(&[
                "docker/dockerfile:1.7",
                "python:3.12-slim",
                "ghcr.io/astral-sh/uv:0.4"
            ])
        );
        assert_eq!(
            info.mounts,
            vec![cache("/root/.cache/pip", "/root/.cache/pip")]
        );
        let test = parse(
            text,
            "python-pip.Dockerfile",
            &args(&[("PYTHON_VERSION", "3.13")]),
            Some("test"),
        )
        .unwrap();
        assert_eq!(
            test.base_images,
            strings(&["docker/dockerfile:1.7", "python:3.13-slim"])
        );
        assert_eq!(
            test.mounts,
            vec![cache("/root/.cache/pip", "/root/.cache/pip")]
        );
    }

    /// A multi-stage go build with a locked, named module cache and a lint stage.
    #[test]
    fn fixture_go_multistage() {
        let text = include_str!("../../tests/fixtures/dockerfiles/go-multistage.Dockerfile");
        let info = parse(text, "go-multistage.Dockerfile", &no_args(), None).unwrap();
        assert_eq!(
            info.base_images,
            strings(&[
                "docker/dockerfile:1",
                "golang:1.22-alpine3.20",
                "gcr.io/distroless/static-debian12:nonroot"
            ])
        );
        let mut gomod = cache("gomod", "/go/pkg/mod");
        gomod.sharing = Sharing::Locked;
        let gobuild = cache("/root/.cache/go-build", "/root/.cache/go-build");
        assert_eq!(info.mounts, vec![gomod.clone(), gobuild.clone()]);

        let lint = parse(text, "go-multistage.Dockerfile", &no_args(), Some("lint")).unwrap();
        assert_eq!(
            lint.base_images,
            strings(&[
                "docker/dockerfile:1",
                "golang:1.22-alpine3.20",
                "golangci/golangci-lint:v1.59-alpine"
            ])
        );
        let golangci = MountUse {
            uid: Some(0),
            gid: Some(0),
            mode: Some(0o755),
            ..cache("golangci", "/root/.cache/golangci-lint")
        };
        assert_eq!(lint.mounts, vec![gomod, gobuild, golangci]);
    }

    /// Heredocs in `RUN` and `COPY` whose bodies look like instructions.
    #[test]
    fn fixture_heredoc() {
        let text = include_str!("../../tests/fixtures/dockerfiles/heredoc.Dockerfile");
        let info = parse(text, "heredoc.Dockerfile", &no_args(), None).unwrap();
        assert_eq!(
            info.base_images,
            strings(&["docker/dockerfile:1.4", "debian:bookworm-slim"])
        );
        let mut apt_cache = cache("/var/cache/apt", "/var/cache/apt");
        apt_cache.sharing = Sharing::Locked;
        let mut apt_lib = cache("/var/lib/apt", "/var/lib/apt");
        apt_lib.sharing = Sharing::Locked;
        assert_eq!(info.mounts, vec![apt_cache, apt_lib]);
    }

    /// A Windows build with `# escape=``: backslash paths and backtick continuations.
    #[test]
    fn fixture_windows_escape() {
        let text = include_str!("../../tests/fixtures/dockerfiles/windows-escape.Dockerfile");
        let info = parse(text, "windows-escape.Dockerfile", &no_args(), None).unwrap();
        assert_eq!(
            info.base_images,
            strings(&[
                "mcr.microsoft.com/dotnet/sdk:8.0-windowsservercore-ltsc2022",
                "mcr.microsoft.com/dotnet/aspnet:8.0-nanoserver-ltsc2022",
            ])
        );
        let nuget = cache(
            "nuget",
            "C:\\Users\\ContainerAdministrator\\.nuget\\packages",
        );
        assert_eq!(info.mounts, vec![nuget]);
    }

    /// BuildKit's own Dockerfile ends with `FROM buildkit-$TARGETOS${BUILDKIT_DEBUG:+-debug}`:
    /// with no build args its cache mounts are read, and with the platform not known they are
    /// still counted, with a warning.
    #[test]
    fn fixture_buildkit() {
        let text = include_str!("../../tests/fixtures/dockerfiles/buildkit/Dockerfile");
        let info = parse(text, "Dockerfile", &no_args(), None).unwrap();
        let root = cache("/root/.cache", "/root/.cache");
        let gomod = cache("/go/pkg/mod", "/go/pkg/mod");
        assert!(info.mounts.contains(&root), "{:?}", info.mounts);
        assert!(info.mounts.contains(&gomod), "{:?}", info.mounts);
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert!(info.base_images.contains(&"alpine:3.23".to_owned()));

        let unknown = parse_build(text, "Dockerfile", &unknown_platform()).unwrap();
        assert!(unknown.mounts.contains(&root) && unknown.mounts.contains(&gomod));
        assert!(
            unknown.warnings.iter().any(|w| w.line == Some(511)
                && w.message.contains("`TARGETOS`")
                && w.message.contains("buildkit-linux")),
            "{:?}",
            unknown.warnings
        );
    }
}
