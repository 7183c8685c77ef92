//! `cachewarden bench generate`: a synthetic fleet history as provenance JSON Lines, for the
//! benchmarks under `benches/`.
//!
//! The fleet: pipelines each have a home builder (1% of runs go elsewhere) and their own
//! registry cache repository; 90% of runs import their pipeline's previous cache export and
//! every successful run exports a new one. One pipeline in 50 builds a base image that 20% of
//! the runs of the next 49 build on (a month later); each pipeline has its own mount ids and 1%
//! of runs also use a neighbour's mount on the same builder; 99% of runs carry record-level
//! builder evidence (one created record, one reused from the pipeline's previous run); 5% fail.
//! Deterministic for a given `--seed`.
//!
//! The shared shape (`--shape shared`) is the fleet where poisoning spreads: pipelines run on
//! any builder of a shared pool of five, most use the same few mount ids (`/root/.cache/pip`
//! for three in five), every run creates two builder records and reuses up to three that the
//! runs before it on that builder created, runs on a builder overlap, and 5% fail. A pipeline
//! compromised from mid-year reaches about half the fleet.

use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::{Context, Result};
use serde_json::json;

use crate::ExitStatus;
use crate::cli::{BenchArgs, BenchCommand, FleetShape, FloorArgs, GenerateArgs, SizeArgs};
use crate::printer::Printer;
use crate::time;

pub fn bench(args: BenchArgs, printer: Printer) -> Result<ExitStatus> {
    match args.command {
        BenchCommand::Generate(args) => generate(&args, printer),
        BenchCommand::Floor(args) => floor(&args),
        BenchCommand::Size(args) => size(&args),
    }
}

/// Refuses a path that is not a file: a measured store must exist already.
fn require_sqlite_file(path: &std::path::Path) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    Err(
        crate::error::InputError::invalid(format!("no SQLite store at `{}`", path.display()))
            .into(),
    )
}

/// Prints, a line each, the bytes of every table holding any and of its indexes, and bytes
/// per event; then the store's total.
fn size(args: &SizeArgs) -> Result<ExitStatus> {
    require_sqlite_file(&args.store)?;
    let store = crate::store::Store::open_read_only(&args.store)?;
    let sizes = store.table_sizes()?;
    let events = sizes
        .iter()
        .find(|t| t.table == "events")
        .map_or(0, |t| t.count)
        .max(1) as f64;
    let mut out = std::io::stdout().lock();
    let per_event = |bytes: u64| bytes as f64 / events;
    let mut total = 0;
    for table in &sizes {
        total += table.rows + table.indexes;
        if table.rows + table.indexes < 1 << 20 {
            continue;
        }
        writeln!(
            out,
            "size, sqlite: {} {:.1} B/event (rows {:.1}, indexes {:.1})",
            table.table,
            per_event(table.rows + table.indexes),
            per_event(table.rows),
            per_event(table.indexes)
        )?;
    }
    writeln!(
        out,
        "size, sqlite: every table {:.1} B/event ({total} bytes, {events} events)",
        per_event(total)
    )?;
    Ok(ExitStatus::Success)
}

/// Copies an imported store's rows into an empty one and prints, a line each, every table's
/// rows and seconds, then the total with events per second.
fn floor(args: &FloorArgs) -> Result<ExitStatus> {
    require_sqlite_file(&args.from)?;
    let mut store = crate::store::Store::open(&args.into)?;
    let copied = store.copy_rows_from(&args.from, args.rest)?;
    let mut out = std::io::stdout().lock();
    let total: f64 = copied.iter().map(|c| c.took.as_secs_f64()).sum();
    for copy in copied
        .iter()
        .filter(|c| c.rows > 0 || c.table.starts_with('('))
    {
        writeln!(
            out,
            "floor, sqlite: {} {} rows in {:.3} s",
            copy.table,
            copy.rows,
            copy.took.as_secs_f64()
        )?;
    }
    let events = copied
        .iter()
        .find(|c| c.table == "events")
        .map_or(0, |c| c.rows);
    writeln!(
        out,
        "floor, sqlite: {} copied in {total:.3} s = {:.0} events/s ({events} events)",
        if args.rest {
            "the rows it lacked"
        } else {
            "every row"
        },
        events as f64 / total.max(f64::EPSILON)
    )?;
    Ok(ExitStatus::Success)
}

/// splitmix64: small, fast and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// The generator of a fleet's year: year 0's is the seed's own.
    fn for_year(seed: u64, year: usize) -> Rng {
        Rng(seed ^ (year as u64).wrapping_mul(0xd1b5_4a32_d192_ed03))
    }
}

/// The registry references of pipeline `p`'s run `i`: most runs import the cache the run
/// before exported; a run that did not fail exports its own, and some (every run of a base
/// pipeline) produce an image. Returns (imported, exported, produced).
fn registry_refs(
    rng: &mut Rng,
    p: usize,
    i: usize,
    failed: bool,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (pu, iu) = (p as u64, i as u64);
    let repo = format!("{REGISTRY}/p{p}/cache");
    let mut imported = Vec::new();
    if i > 0 && rng.chance(90) {
        imported.push(format!("{repo}:main@{}", digest(1, pu, iu - 1)));
    }
    let mut exported = Vec::new();
    let mut produced = Vec::new();
    if !failed {
        exported.push(format!("{repo}:main@{}", digest(1, pu, iu)));
        if rng.chance(10) || p.is_multiple_of(BASE_EVERY) {
            produced.push(format!("{REGISTRY}/p{p}/app:{i}@{}", digest(2, pu, iu)));
        }
    }
    (imported, exported, produced)
}

/// A deterministic fake digest.
fn digest(kind: u64, a: u64, b: u64) -> String {
    let mut h =
        Rng(kind.wrapping_mul(0x1000_0000_01b3) ^ a.wrapping_mul(0x9e37) ^ b.rotate_left(17));
    format!(
        "sha256:{:016x}{:016x}{:016x}{:016x}",
        h.next(),
        h.next(),
        h.next(),
        h.next()
    )
}

const REGISTRY: &str = "registry.example.com";
/// One in this many pipelines builds a base image that others use.
const BASE_EVERY: usize = 50;
const MOUNTS_PER_PIPELINE_MIN: usize = 1;

/// How a synthetic fleet's pipelines share builders and caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shape {
    /// Home builders, own mount ids.
    #[default]
    Default,
    /// Shared builder pools, a handful of shared mount ids, records reused across pipelines.
    Shared,
}

/// The shape of a synthetic fleet.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    pub shape: Shape,
    pub runs: usize,
    pub pipelines: usize,
    pub builders: usize,
    pub mounts: usize,
    pub seed: u64,
    /// The year of the fleet's history, from 0: year N continues year N-1.
    pub year: usize,
}

fn generate(args: &GenerateArgs, printer: Printer) -> Result<ExitStatus> {
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(path).with_context(|| format!("cannot create `{}`", path.display()))?,
        )),
        None => Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
    };
    let shape = match args.shape {
        FleetShape::Default => Shape::Default,
        FleetShape::Shared => Shape::Shared,
    };
    let fleet = Fleet {
        shape,
        runs: args.runs,
        pipelines: args.pipelines,
        builders: args.builders.unwrap_or(match shape {
            Shape::Default => 200,
            Shape::Shared => 20,
        }),
        mounts: args.mounts,
        seed: args.seed,
        year: args.year,
    };
    let summary = write_fleet(&fleet, &mut out)?;
    out.flush()?;
    printer.status(summary);
    Ok(ExitStatus::Success)
}

/// Writes the fleet's history as provenance JSON Lines; returns a one-line summary of it.
pub fn write_fleet(args: &Fleet, out: &mut dyn Write) -> std::io::Result<String> {
    match args.shape {
        Shape::Default => write_default(args, out),
        Shape::Shared => write_shared(args, out),
    }
}

/// The pipelines and builders, as every shape declares them.
fn write_declarations(
    pipelines: usize,
    builders: usize,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let levels = ["untrusted", "internal", "release"];
    for p in 0..pipelines {
        let line = json!({"v": 1, "type": "pipeline", "name": format!("p{p}"), "project": format!("project-{}", p / 3),
            "trust_level": levels[p % 3]});
        writeln!(out, "{line}")?;
    }
    for b in 0..builders {
        writeln!(
            out,
            "{}",
            json!({"v": 1, "type": "builder", "name": format!("b{b}"), "driver": "docker"})
        )?;
    }
    Ok(())
}

/// The events a run line records, as the importer counts them.
fn count_events(line: &serde_json::Value) -> usize {
    let listed = |key: &str| line[key].as_array().map_or(0, Vec::len);
    let mut events =
        1 + listed("imported") + listed("exported") + listed("produced") + listed("base_images");
    for m in line["mounts"].as_array().into_iter().flatten() {
        events += if m["readonly"].as_bool() == Some(true) {
            1
        } else {
            2
        };
    }
    let records = &line["records"];
    events
        + records["created"].as_array().map_or(0, Vec::len)
        + records["reused"].as_array().map_or(0, Vec::len)
}

fn write_default(args: &Fleet, out: &mut dyn Write) -> std::io::Result<String> {
    let pipelines = args.pipelines.max(1);
    let builders = args.builders.max(1);
    let mounts_per_pipeline = (args.mounts / pipelines).max(MOUNTS_PER_PIPELINE_MIN);
    let mut rng = Rng::for_year(args.seed, args.year);
    write_declarations(pipelines, builders, out)?;
    // Runs are spread over one year; each pipeline's runs are evenly spaced with jitter. Year N
    // numbers its runs after year N-1's and starts where it ended.
    let year = 365 * 24 * 3600 * 1_000_000_i64;
    let start = time::parse_rfc3339("2026-01-01T00:00:00Z", "start").expect("valid literal");
    let runs_per_pipeline = args.runs.div_ceil(pipelines);
    let spacing = year / runs_per_pipeline.max(1) as i64;
    let first = args.year * runs_per_pipeline;
    let mut written = 0usize;
    let mut events = 0usize;
    // Interleave pipelines so the file is roughly in time order, as a live fleet writes it.
    'outer: for i in first..first + runs_per_pipeline {
        for p in 0..pipelines {
            if written == args.runs {
                break 'outer;
            }
            let home = p % builders;
            let builder = if rng.chance(1) {
                rng.below(builders as u64) as usize
            } else {
                home
            };
            let jitter = rng.below(spacing.max(1) as u64 / 2) as i64;
            let started = start + i as i64 * spacing + jitter;
            let duration = 60_000_000 + rng.below(540_000_000) as i64;
            let finished = started + duration;
            let failed = rng.chance(5);
            let (imported, exported, produced) = registry_refs(&mut rng, p, i, failed);
            // Base images: a base pipeline's image from about a month earlier.
            let mut base_images = Vec::new();
            if p % BASE_EVERY != 0 && rng.chance(20) {
                let base = (p / BASE_EVERY) * BASE_EVERY;
                let lag = (30 * 24 * 3600 * 1_000_000 / spacing.max(1)) as usize;
                if i > lag {
                    let j = i - lag;
                    base_images.push(format!(
                        "{REGISTRY}/p{base}/app:{j}@{}",
                        digest(2, base as u64, j as u64)
                    ));
                }
            }
            let mut mounts = Vec::new();
            let own = rng.below(mounts_per_pipeline as u64);
            mounts.push(json!({"id": format!("/cache/p{p}/m{own}"), "readonly": rng.chance(30)}));
            if rng.chance(1) {
                // A neighbour on the same home builder shares one of its mount ids.
                let neighbour = (p + builders) % pipelines;
                mounts.push(json!({"id": format!("/cache/p{neighbour}/m0")}));
            }
            let mut line = json!({
                "v": 1, "type": "run", "pipeline": format!("p{p}"), "run": format!("{i}-1"), "step": "Dockerfile",
                "builder": format!("b{builder}"), "started_at": time::format(started), "finished_at": time::format(finished),
                "status": if failed { "failed" } else { "succeeded" },
                "imported": imported, "exported": exported, "produced": produced, "base_images": base_images,
                "mounts": mounts,
            });
            if rng.chance(99) {
                let created = json!({"id": format!("r{p}x{i}"), "type": "regular", "description": format!("[2/3] RUN build p{p}")});
                let mut reused = Vec::new();
                if i > 0 {
                    reused.push(json!({"id": format!("r{p}x{}", i - 1), "type": "regular"}));
                }
                line["records"] = json!({"created": [created], "reused": reused});
            }
            events += count_events(&line);
            writeln!(out, "{line}")?;
            written += 1;
        }
    }
    Ok(format!(
        "generated {written} runs, about {events} events, {pipelines} pipelines, {builders} builders, {} mount ids",
        pipelines * mounts_per_pipeline
    ))
}

/// The shared shape's mount ids, each with the share of pipelines that use it (in percent).
const SHARED_MOUNTS: [(&str, u64); 5] = [
    ("/root/.cache/pip", 60),
    ("/root/.npm", 15),
    ("/go/pkg/mod", 10),
    ("/root/.cargo/registry", 10),
    ("/root/.gradle/caches", 5),
];
/// Used by most runs beside their language's cache.
const APT_MOUNT: &str = "/var/cache/apt";
/// Builders per shared pool.
const POOL: usize = 5;

/// The shared shape: see the module's documentation.
fn write_shared(args: &Fleet, out: &mut dyn Write) -> std::io::Result<String> {
    let pipelines = args.pipelines.max(1);
    let builders = args.builders.max(1);
    let pools = builders.div_ceil(POOL);
    let mut rng = Rng(args.seed);
    write_declarations(pipelines, builders, out)?;
    // Each pipeline's language cache, fixed for the year.
    let languages: Vec<usize> = (0..pipelines)
        .map(|_| {
            let mut roll = rng.below(100);
            SHARED_MOUNTS
                .iter()
                .position(|&(_, share)| {
                    let hit = roll < share;
                    roll = roll.saturating_sub(share);
                    hit
                })
                .unwrap_or(0)
        })
        .collect();
    // The languages come from the seed alone, so a pipeline keeps its language every year.
    if args.year > 0 {
        rng = Rng::for_year(args.seed, args.year);
    }
    // Runs are spread evenly over the year in fleet order, with up to ten minutes of jitter, and
    // take 2 to 30 minutes: a builder of the 1M-run fleet starts a run every ten minutes or so.
    let year = 365 * 24 * 3600 * 1_000_000_i64;
    let start = time::parse_rfc3339("2026-01-01T00:00:00Z", "start").expect("valid literal");
    let spacing = year / args.runs.max(1) as i64;
    let runs_per_pipeline = args.runs.div_ceil(pipelines);
    let first = args.year * runs_per_pipeline;
    let earlier = (args.year * args.runs) as i64;
    // What the runs before left on each builder: the last shared layer record, the last
    // dependency-layer record per language; and each pipeline's last run (builder, run).
    let mut last_layer: Vec<Option<String>> = vec![None; builders];
    let mut last_deps: Vec<Vec<Option<String>>> = vec![vec![None; SHARED_MOUNTS.len()]; builders];
    let mut last_run: Vec<Option<(usize, usize)>> = vec![None; pipelines];
    let mut written = 0usize;
    let mut events = 0usize;
    'outer: for i in first..first + runs_per_pipeline {
        for p in 0..pipelines {
            if written == args.runs {
                break 'outer;
            }
            let pool = p % pools;
            let builder = if rng.chance(1) {
                rng.below(builders as u64) as usize
            } else {
                (pool * POOL + rng.below(POOL as u64) as usize).min(builders - 1)
            };
            let jitter = rng.below(600_000_000) as i64;
            let started = start + (earlier + written as i64) * spacing + jitter;
            let finished = started + 120_000_000 + rng.below(1_680_000_000) as i64;
            let failed = rng.chance(5);
            let (imported, exported, produced) = registry_refs(&mut rng, p, i, failed);
            let mut base_images = Vec::new();
            if p % BASE_EVERY != 0 && rng.chance(20) {
                let base = (p / BASE_EVERY) * BASE_EVERY;
                let lag =
                    (30 * 24 * 3600 * 1_000_000 / (spacing * pipelines as i64).max(1)) as usize;
                if i > lag {
                    let j = i - lag;
                    base_images.push(format!(
                        "{REGISTRY}/p{base}/app:{j}@{}",
                        digest(2, base as u64, j as u64)
                    ));
                }
            }
            let language = languages[p];
            let mut mounts =
                vec![json!({"id": SHARED_MOUNTS[language].0, "readonly": rng.chance(30)})];
            if rng.chance(85) {
                mounts.push(json!({"id": APT_MOUNT, "readonly": rng.chance(30)}));
            }
            // Two layers created; the builder's last shared layer, its last dependency layer of
            // this language and the pipeline's own last one (when it ran here) reused.
            let layer = format!("r{p}x{i}a");
            let deps = format!("r{p}x{i}b");
            let mut reused: Vec<String> = Vec::new();
            let own = match last_run[p] {
                Some((b, j)) if b == builder => Some(format!("r{p}x{j}b")),
                _ => None,
            };
            for id in [
                last_layer[builder].clone(),
                last_deps[builder][language].clone(),
                own,
            ]
            .into_iter()
            .flatten()
            {
                if !reused.contains(&id) {
                    reused.push(id);
                }
            }
            let line = json!({
                "v": 1, "type": "run", "pipeline": format!("p{p}"), "run": format!("{i}-1"), "step": "Dockerfile",
                "builder": format!("b{builder}"), "started_at": time::format(started), "finished_at": time::format(finished),
                "status": if failed { "failed" } else { "succeeded" },
                "imported": imported, "exported": exported, "produced": produced, "base_images": base_images,
                "mounts": mounts,
                "records": {
                    "created": [
                        {"id": layer, "type": "regular", "description": "[2/4] RUN apt-get update && apt-get install -y build-essential"},
                        {"id": deps, "type": "regular", "description": format!("[3/4] RUN --mount=type=cache,target={} install", SHARED_MOUNTS[language].0)},
                    ],
                    "reused": reused.iter().map(|id| json!({"id": id, "type": "regular"})).collect::<Vec<_>>(),
                },
            });
            last_layer[builder] = Some(layer);
            last_deps[builder][language] = Some(deps);
            last_run[p] = Some((builder, i));
            events += count_events(&line);
            writeln!(out, "{line}")?;
            written += 1;
        }
    }
    Ok(format!(
        "generated {written} runs, about {events} events, {pipelines} pipelines, {builders} builders in pools of {POOL}, {} mount ids",
        SHARED_MOUNTS.len() + 1
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn fleet(shape: Shape, seed: u64) -> (String, Vec<u8>) {
        fleet_year(shape, seed, 0)
    }

    /// Year `year` of a fleet of 2,000 runs a year: its summary and its lines.
    fn fleet_year(shape: Shape, seed: u64, year: usize) -> (String, Vec<u8>) {
        let mut out = Vec::new();
        let fleet = Fleet {
            shape,
            runs: 2000,
            pipelines: 50,
            builders: 10,
            mounts: 100,
            seed,
            year,
        };
        let summary = write_fleet(&fleet, &mut out).unwrap();
        (summary, out)
    }

    /// The run lines of a fleet's history.
    fn run_lines(out: Vec<u8>) -> Vec<serde_json::Value> {
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .filter(|line: &serde_json::Value| line["type"] == "run")
            .collect()
    }

    /// Each shape gives the same fleet for the same seed and another for another seed, so a
    /// benchmark's figures can be compared run to run.
    #[test]
    fn fleets_are_deterministic_per_seed() {
        for shape in [Shape::Default, Shape::Shared] {
            assert!(fleet(shape, 3) == fleet(shape, 3), "{shape:?}");
            assert!(fleet(shape, 3).1 != fleet(shape, 4).1, "{shape:?}");
        }
    }

    /// Year 1 of a fleet continues year 0: the same pipelines' later runs, none of them a run
    /// key year 0 used, starting after year 0's runs started, importing what year 0 exported.
    #[test]
    fn a_later_year_continues_the_one_before() {
        for shape in [Shape::Default, Shape::Shared] {
            let year = |year| run_lines(fleet_year(shape, 5, year).1);
            let (first, second) = (year(0), year(1));
            assert_eq!((first.len(), second.len()), (2000, 2000), "{shape:?}");
            let key = |run: &serde_json::Value| format!("{}/{}", run["pipeline"], run["run"]);
            let keys: HashSet<String> = first.iter().map(key).collect();
            assert!(
                second.iter().all(|run| !keys.contains(&key(run))),
                "{shape:?}"
            );
            let started = |runs: &[serde_json::Value], pick: fn(i64, i64) -> i64| {
                runs.iter()
                    .map(|run| {
                        time::parse_rfc3339(run["started_at"].as_str().unwrap(), "t").unwrap()
                    })
                    .reduce(pick)
                    .unwrap()
            };
            let (first_began, first_last) = (started(&first, i64::min), started(&first, i64::max));
            let second_began = started(&second, i64::min);
            assert!(
                second_began > first_began + (first_last - first_began) / 2,
                "{shape:?}"
            );
            let exported: HashSet<&str> = first
                .iter()
                .flat_map(|run| run["exported"].as_array().unwrap())
                .filter_map(|r| r.as_str())
                .collect();
            let carried = second
                .iter()
                .flat_map(|run| run["imported"].as_array().unwrap())
                .filter(|r| exported.contains(r.as_str().unwrap()))
                .count();
            assert!(carried > 0, "{shape:?}");
        }
    }

    /// The shared shape is the fleet of the issue: every run creates two builder records and
    /// reuses at most three, most runs share `/root/.cache/pip`, about 5% fail, about 10.5
    /// events a run.
    #[test]
    fn the_shared_shape_shares_mounts_and_records() {
        let (summary, out) = fleet(Shape::Shared, 1);
        let runs = run_lines(out);
        assert_eq!(runs.len(), 2000);
        let (mut pip, mut failed, mut reusing, mut events) = (0, 0, 0, 0);
        for run in &runs {
            let records = &run["records"];
            assert_eq!(records["created"].as_array().unwrap().len(), 2);
            let reused = records["reused"].as_array().unwrap().len();
            assert!(reused <= 3);
            reusing += usize::from(reused > 0);
            let mounts = run["mounts"].as_array().unwrap();
            pip += usize::from(mounts.iter().any(|m| m["id"] == "/root/.cache/pip"));
            failed += usize::from(run["status"] == "failed");
            events += count_events(run);
        }
        assert!(pip > 1000, "{pip} runs use the pip cache");
        assert!((60..=140).contains(&failed), "{failed} failed runs");
        assert!(reusing > 1900, "{reusing} runs reuse records");
        assert!(
            (20_000..=22_000).contains(&events),
            "{events} events; {summary}"
        );
    }
}
