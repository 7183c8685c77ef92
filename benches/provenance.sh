#!/usr/bin/env bash
# Benchmark of the CI hook's store: `import` throughput and `record` latency.
#
#   benches/provenance.sh [RUNS] [RECORD_CALLS]
#
# Generates a synthetic fleet history of RUNS runs (default 100000; the shape from `SHAPE`,
# default or shared), imports it into a path where no store is (built beside it and put in
# place whole) and into a store already there (an empty file, written a transaction a batch),
# then the fleet's next year (`bench generate --year 1`, as many runs again) into a copy of the
# first store, so every run key is checked against the ones it holds; events per second for
# each, and the floor under the last (`bench floor --rest`: the rows that import added, copied
# by SQLite onto another copy of the first store). Then times
# RECORD_CALLS (default 200) `record` calls against
# that store, process start included, and prints the median and p95; then times `verify-log`
# over the whole chain. Last, the floor under the import: the imported rows copied by SQLite
# itself into an empty store (`bench floor`: the same schema, indexes and triggers, no
# parsing, lookups or checks), with the import's time over it; and the store's size, table by
# table with its indexes, in bytes per event (`bench size`).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/record_latency.sh
runs=${1:-100000}
calls=${2:-200}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/cachewarden
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

generate=("$bin" bench generate --shape "${SHAPE:-default}" --runs "$runs")
"${generate[@]}" -o "$work/history.jsonl" 2>"$work/gen.txt"
events=$(grep -o 'about [0-9]*' "$work/gen.txt" | grep -o '[0-9]*')
start=$(date +%s%N)
"$bin" --db "$work/store.db" import "$work/history.jsonl" 2>/dev/null
end=$(date +%s%N)
import_s=$(echo "scale=3; ($end - $start) / 1000000000" | bc)
echo "import: $runs runs, $events events in ${import_s}s = $(echo "$events / $import_s" | bc) events/s (no store at the path)"
: >"$work/there.db"
start=$(date +%s%N)
"$bin" --db "$work/there.db" import "$work/history.jsonl" 2>/dev/null
end=$(date +%s%N)
there_s=$(echo "scale=3; ($end - $start) / 1000000000" | bc)
echo "import: $runs runs, $events events in ${there_s}s = $(echo "$events / $there_s" | bc) events/s (into a store already there)"
rm -f "$work"/there.db*
"${generate[@]}" --year 1 -o "$work/next.jsonl" 2>"$work/gen.txt"
next=$(grep -o 'about [0-9]*' "$work/gen.txt" | grep -o '[0-9]*')
cp "$work/store.db" "$work/grown.db"
start=$(date +%s%N)
"$bin" --db "$work/grown.db" import "$work/next.jsonl" 2>/dev/null
end=$(date +%s%N)
grown_s=$(echo "scale=3; ($end - $start) / 1000000000" | bc)
echo "import: the next year, $runs runs, $next events in ${grown_s}s = $(echo "$next / $grown_s" | bc) events/s (into the store of $events events)"
cp "$work/store.db" "$work/rest.db"
"$bin" bench floor --from "$work/grown.db" --into "$work/rest.db" --rest >"$work/floor.txt"
tail -1 "$work/floor.txt"
rest_s=$(tail -1 "$work/floor.txt" | grep -o 'in [0-9.]* s' | grep -o '[0-9.]*')
echo "import of the next year over its floor: x$(echo "scale=2; $grown_s / $rest_s" | bc)"
rm -f "$work"/grown.db* "$work"/rest.db* "$work/next.jsonl"

read -r median p95 < <(record_latency "$bin" "$work/store.db" "$calls" "$work")
echo "record: $calls calls on a store of $runs runs: median $median ms, p95 $p95 ms (process start included)"
start=$(date +%s%N)
"$bin" --db "$work/store.db" verify-log >/dev/null
end=$(date +%s%N)
echo "verify-log: the chain of $((runs + calls)) runs recomputed in $(echo "scale=3; ($end - $start) / 1000000000" | bc)s"
"$bin" bench floor --from "$work/store.db" --into "$work/floor.db" >"$work/floor.txt"
tail -1 "$work/floor.txt"
floor_s=$(tail -1 "$work/floor.txt" | grep -o 'in [0-9.]* s' | grep -o '[0-9.]*')
echo "import over its floor: x$(echo "scale=2; $import_s / $floor_s" | bc)"
"$bin" bench size "$work/store.db"
