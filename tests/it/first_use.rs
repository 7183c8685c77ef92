//! The first use as the README gives it: its two commands, the script that installs what they
//! need, and CI running exactly those. The demo itself starts four Docker Engines and builds
//! the binary, too much for a test: `.ci/run` runs it, and it fails unless both incidents close.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const INSTALL: &str = "scripts/install-deps.sh";
const DEMO: &str = "./demo.sh";
const TESTS: &str = "cargo test --locked";

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path))
        .unwrap_or_else(|err| panic!("read {path}: {err}"))
}

/// The commands of a shell text: lines without comments and blank lines, trimmed.
fn commands(shell: &str) -> Vec<String> {
    shell
        .lines()
        .map(|line| match line.find(" #") {
            Some(i) => &line[..i],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        })
        .map(|line| line.trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

/// The commands of the README's fenced shell blocks, in order.
fn readme_commands() -> Vec<String> {
    let readme = read("README.md");
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut body = String::new();
        for line in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
        if matches!(lang.trim(), "sh" | "bash" | "shell" | "") {
            out.extend(commands(&body));
        }
    }
    out
}

/// Where `wanted` runs among `commands`: the whole command, or with arguments.
fn position(commands: &[String], wanted: &str) -> Option<usize> {
    commands.iter().position(|c| {
        c == wanted
            || c.strip_prefix(wanted)
                .is_some_and(|rest| rest.starts_with(' '))
    })
}

/// The README's first two commands are the demo and the tests, in that order.
#[test]
fn readme_starts_with_the_demo_then_the_tests() {
    let commands = readme_commands();
    assert_eq!(
        commands.get(..2),
        Some(&[DEMO.to_owned(), TESTS.to_owned()][..]),
        "the README's first commands: {commands:?}"
    );
}

/// CI runs the install script, then the demo, then the README's test command, and stops no
/// service the machine runs.
#[test]
fn ci_runs_the_install_script_the_demo_and_the_readme_test_command() {
    let ci = commands(&read(".ci/run"));
    let install = position(&ci, INSTALL).expect(".ci/run runs scripts/install-deps.sh");
    let demo = position(&ci, DEMO).expect(".ci/run runs ./demo.sh");
    let tests = position(&ci, TESTS).expect(".ci/run runs cargo test --locked");
    assert!(install < demo && demo < tests, "{ci:?}");
    for line in &ci {
        assert!(
            !line.contains("systemctl") && !line.contains("service "),
            ".ci/run leaves the machine's services alone: {line}"
        );
    }
}

/// The demo installs what it needs with the same script, and ends by verifying and closing
/// its incidents without `--force`, checking that each report says closed.
#[test]
fn demo_uses_the_install_script_and_closes_without_force() {
    let demo = commands(&read("demo.sh"));
    let install = position(&demo, &format!("\"$REPO/{INSTALL}\""))
        .expect("demo.sh runs scripts/install-deps.sh");
    let verify = demo
        .iter()
        .position(|c| c.contains("incident verify"))
        .expect("demo.sh verifies");
    let close = demo
        .iter()
        .position(|c| c.contains("incident close"))
        .expect("demo.sh closes");
    assert!(install < verify && verify < close, "{demo:?}");
    assert!(
        !demo.iter().any(|c| c.contains("--force")),
        "the demo closes without --force"
    );
    assert!(
        demo.iter()
            .skip(close)
            .any(|c| c.contains("Status: \\*\\*closed\\*\\*")),
        "the demo checks that each report says closed"
    );
}

/// The install script holds one clear list of packages, covering every service the tests
/// and the demo start.
#[test]
fn install_script_lists_every_package_the_tests_need() {
    let script = read(INSTALL);
    for package in [
        "docker.io",
        "docker-registry",
        "skopeo",
        "busybox-static",
        "apache2-utils",
        "openssl",
        "docker-buildx",
        "postgresql",
    ] {
        assert!(
            script
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{package} ")) || l.trim() == package),
            "{INSTALL} installs {package}"
        );
    }
    assert!(script.contains("apt-get update"), "{INSTALL} updates first");
}
