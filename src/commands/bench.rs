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

use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::{Context, Result};
use serde_json::json;

use crate::ExitStatus;
use crate::cli::{BenchArgs, BenchCommand, GenerateArgs};
use crate::printer::Printer;
use crate::time;

pub fn bench(args: BenchArgs, printer: Printer) -> Result<ExitStatus> {
    match args.command {
        BenchCommand::Generate(args) => generate(&args, printer),
    }
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

/// The shape of a synthetic fleet.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    pub runs: usize,
    pub pipelines: usize,
    pub builders: usize,
    pub mounts: usize,
    pub seed: u64,
}

fn generate(args: &GenerateArgs, printer: Printer) -> Result<ExitStatus> {
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(path).with_context(|| format!("cannot create `{}`", path.display()))?,
        )),
        None => Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
    };
    let fleet = Fleet {
        runs: args.runs,
        pipelines: args.pipelines,
        builders: args.builders,
        mounts: args.mounts,
        seed: args.seed,
    };
    let summary = write_fleet(&fleet, &mut out)?;
    out.flush()?;
    printer.status(summary);
    Ok(ExitStatus::Success)
}

/// Writes the fleet's history as provenance JSON Lines; returns a one-line summary of it.
pub fn write_fleet(args: &Fleet, out: &mut dyn Write) -> std::io::Result<String> {
    let pipelines = args.pipelines.max(1);
    let builders = args.builders.max(1);
    let mounts_per_pipeline = (args.mounts / pipelines).max(MOUNTS_PER_PIPELINE_MIN);
    let mut rng = Rng(args.seed);
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
    // Runs are spread over one year; each pipeline's runs are evenly spaced with jitter.
    let year = 365 * 24 * 3600 * 1_000_000_i64;
    let start = time::parse_rfc3339("2026-01-01T00:00:00Z", "start").expect("valid literal");
    let runs_per_pipeline = args.runs.div_ceil(pipelines);
    let spacing = year / runs_per_pipeline.max(1) as i64;
    let mut written = 0usize;
    let mut events = 0usize;
    // Interleave pipelines so the file is roughly in time order, as a live fleet writes it.
    'outer: for i in 0..runs_per_pipeline {
        for p in 0..pipelines {
            if written == args.runs {
                break 'outer;
            }
            let pu = p as u64;
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
            let repo = format!("{REGISTRY}/p{p}/cache");
            let mut imported = Vec::new();
            if i > 0 && rng.chance(90) {
                imported.push(format!("{repo}:main@{}", digest(1, pu, i as u64 - 1)));
            }
            let mut exported = Vec::new();
            let mut produced = Vec::new();
            if !failed {
                exported.push(format!("{repo}:main@{}", digest(1, pu, i as u64)));
                if rng.chance(10) || p % BASE_EVERY == 0 {
                    produced.push(format!(
                        "{REGISTRY}/p{p}/app:{i}@{}",
                        digest(2, pu, i as u64)
                    ));
                }
            }
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
            events += 1
                + line["imported"].as_array().map_or(0, Vec::len)
                + line["exported"].as_array().map_or(0, Vec::len)
                + line["produced"].as_array().map_or(0, Vec::len)
                + line["base_images"].as_array().map_or(0, Vec::len);
            for m in line["mounts"].as_array().into_iter().flatten() {
                events += if m["readonly"].as_bool() == Some(true) {
                    1
                } else {
                    2
                };
            }
            if rng.chance(99) {
                let created = json!({"id": format!("r{p}x{i}"), "type": "regular", "description": format!("[2/3] RUN build p{p}")});
                let mut reused = Vec::new();
                if i > 0 {
                    reused.push(json!({"id": format!("r{p}x{}", i - 1), "type": "regular"}));
                }
                events += 1 + reused.len();
                line["records"] = json!({"created": [created], "reused": reused});
            }
            writeln!(out, "{line}")?;
            written += 1;
        }
    }
    Ok(format!(
        "generated {written} runs, about {events} events, {pipelines} pipelines, {builders} builders, {} mount ids",
        pipelines * mounts_per_pipeline
    ))
}
