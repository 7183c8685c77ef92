//! The layout the architecture depends on, checked on the sources: the core does not know the
//! command line, and modules that were once in an import cycle stay out of it.

use std::path::{Path, PathBuf};

/// The folders of the core: graph, plan, report, audit, store and the purge. None may depend
/// on the command line's types, or a renamed flag would change stored data and reports.
const CORE: &[&str] = &["graph", "plan", "report", "audit", "store", "purge"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively; nothing when it does not exist.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Whether the source names module `module` of the crate, in a path or a grouped `use`.
fn names_module(source: &str, module: &str) -> bool {
    let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    ["crate::", "crate::{", ","].iter().any(|before| {
        let pattern = format!("{before}{module}");
        compact.match_indices(&pattern).any(|(at, _)| {
            let after = compact[at + pattern.len()..].chars().next();
            let grouped = *before == "," && !compact[..at].contains("crate::{");
            !grouped && !after.is_some_and(ident)
        })
    })
}

/// No file of the core, test modules included, names `crate::cli`.
#[test]
fn the_core_does_not_name_the_command_line() {
    let mut offenders = Vec::new();
    for dir in CORE {
        for file in rust_files(&src().join(dir)) {
            let source = std::fs::read_to_string(&file).unwrap();
            if names_module(&source, "cli") {
                offenders.push(file.display().to_string());
            }
        }
    }
    assert!(offenders.is_empty(), "name `crate::cli`: {offenders:?}");
    assert!(names_module("use crate::cli::SeedArgs;", "cli"));
    assert!(names_module("use crate::{\n    cli::X,", "cli"));
    assert!(names_module("use crate::{model, cli::X};", "cli"));
    assert!(!names_module("use crate::client::X;", "cli"));
}

/// `time` does not import `model` (which uses `time::Micros`), and the Engine client does not
/// import the BuildKit client (which connects through the Engine's).
#[test]
fn former_import_cycles_stay_broken() {
    let read = |path: &str| std::fs::read_to_string(src().join(path)).unwrap();
    assert!(read("model.rs").contains("crate::time::"));
    assert!(!names_module(&read("time.rs"), "model"));
    assert!(read("remote/buildkit.rs").contains("crate::remote::engine::"));
    let engine = read("remote/engine.rs");
    assert!(!engine.contains("buildkit::") && !engine.contains("remote::{buildkit"));
}
