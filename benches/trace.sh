#!/usr/bin/env bash
# Benchmark of `trace` at fleet scale, against a recursive-CTE SQL query over the same store.
#
#   benches/trace.sh [RUNS] [PIPELINE...]
#
# Generates a synthetic fleet (default 1,000,000 runs, 5,000 pipelines, 200 builders, 50,000
# mount ids), imports it, then for each pipeline (default: p17, a leaf pipeline, and p50, which
# builds a base image others use) times:
#   - `cachewarden trace --pipeline P --format json` (time-aware), wall time and peak memory,
#     closure size; where its time goes (`--verbose`); then ROUNDS more runs (default 3) as JSON and as text (the default format),
#     each reported as median, min and max;
#   - `cachewarden trace --pipeline P --ignore-time`, the same way;
#   - a recursive CTE computing the time-blind closure from the same seeds in sqlite3
#     (with a timeout), and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000000}
shift || true
pipelines=("$@")
[ ${#pipelines[@]} -gt 0 ] || pipelines=(p17 p50)
cte_timeout=${CTE_TIMEOUT:-600}
rounds=${ROUNDS:-3}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/cachewarden
work=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$work"
db="$work/fleet.db"

if [ ! -f "$db" ]; then
    "$bin" bench generate --runs "$runs" -o "$work/fleet.jsonl"
    /usr/bin/time -f "import: %e s wall, %M KiB peak" "$bin" --db "$db" import "$work/fleet.jsonl"
    rm -f "$work/fleet.jsonl"
fi
echo "store: $(sqlite3 "$db" 'SELECT count(*) FROM runs') runs, $(sqlite3 "$db" 'SELECT count(*) FROM events') events"

measure() { # label, command...
    local label=$1
    shift
    local out="$work/out.json"
    local stats
    /usr/bin/time -o "$work/time.txt" -f "%e %M" "$@" >"$out" 2>/dev/null
    stats=$(tail -1 "$work/time.txt")
    local size
    size=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sum(len(d[k]) for k in ['runs','cache_refs','mounts','builders','images','records']), len(d['runs']))" "$out")
    echo "$label: ${stats% *} s wall, ${stats#* } KiB peak, closure ${size% *} entities (${size#* } runs)"
}

# Median, min and max wall time of `rounds` runs of a command, output written to a file.
timed() {
    local times=()
    for _ in $(seq "$rounds"); do
        /usr/bin/time -o "$work/time.txt" -f "%e" "$@" >"$work/timed.out" 2>/dev/null
        times+=("$(tail -1 "$work/time.txt")")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{t[NR] = $1} END {print t[int((NR + 1) / 2)], t[1], t[NR]}'
}

for p in "${pipelines[@]}"; do
    measure "trace $p" "$bin" --db "$db" trace --pipeline "$p" --format json
    echo "phases, output to /dev/null: $("$bin" -v --db "$db" trace --pipeline "$p" --format json 2>&1 >/dev/null | grep '^trace: ')"
    read -r t_aware low high < <(timed "$bin" --db "$db" trace --pipeline "$p" --format json)
    echo "trace $p --format json, $rounds runs: median $t_aware s (min $low, max $high)"
    read -r t_text low high < <(timed "$bin" --db "$db" trace --pipeline "$p")
    echo "trace $p (text), $rounds runs: median $t_text s (min $low, max $high)"
    measure "trace $p --ignore-time" "$bin" --db "$db" trace --pipeline "$p" --ignore-time --format json
    read -r t_blind low high < <(timed "$bin" --db "$db" trace --pipeline "$p" --ignore-time --format json)
    echo "trace $p --ignore-time --format json, $rounds runs: median $t_blind s (min $low, max $high)"
    start=$(date +%s.%N)
    if cte=$(sed "s/@PIPELINE@/$p/" benches/closure.sql | timeout "$cte_timeout" sqlite3 "$db"); then
        end=$(date +%s.%N)
        t_cte=$(echo "$end - $start" | bc)
        echo "recursive CTE $p (time ignored): ${t_cte} s, closure: $cte"
        echo "ratio CTE / cachewarden --ignore-time: $(echo "scale=1; $t_cte / $t_blind" | bc)x; CTE / time-aware: $(echo "scale=1; $t_cte / $t_aware" | bc)x"
    else
        echo "recursive CTE $p: did not finish within ${cte_timeout}s (ratio > $(echo "scale=0; $cte_timeout / $t_blind" | bc)x)"
    fi
done
