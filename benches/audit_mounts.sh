#!/usr/bin/env bash
# Benchmark of `cachewarden audit mounts`.
#
#   benches/audit_mounts.sh [FILES] [--release]
#
# On a private dockerd (Docker 20.10) and loopback registry started by the test harness, a
# recorded trusted build fills one cache mount with FILES files (default 100000); then times a
# baseline (the helper build copying the mount out, the walk hashing every file, the snapshot
# stored) and, after an untrusted build changed 100 files and planted a hook, an audit that
# diffs against that baseline. Prints wall time, files per second, peak memory (with GNU time),
# the findings and the store's size for each. `--release` times a release build of cachewarden
# (the test harness itself stays in the dev profile).
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-100000}
if [ "${2:-}" = "--release" ]; then
    cargo build --release --quiet
    export CACHEWARDEN_BENCH_BIN=$(pwd)/${CARGO_TARGET_DIR:-target}/release/cachewarden
fi
CACHEWARDEN_BENCH_FILES=$files cargo test --quiet --test it -- --ignored --nocapture \
    audit_mounts::bench_audit_of_a_large_mount 2>&1 | grep -E '^bench:|panicked|FAILED'
