#!/usr/bin/env bash
# Benchmark of `trace` at fleet scale, against a recursive-CTE SQL query over the same store.
#
#   SHAPE=default|shared benches/trace.sh [RUNS] [SEED...]
#
# Generates a synthetic fleet of the shape (`bench generate --shape`; default 1,000,000 runs,
# 5,000 pipelines; the default shape on 200 builders with 50,000 mount ids, the shared shape on
# 20 builders with 6 shared mount ids), imports it (kept as `$BENCH_DIR/fleet.db`, or
# `shared.db` for the shared shape), then for each seed times the trace. A seed is a pipeline,
# `P`, or a pipeline compromised from a time on, `P@TIME` (`--pipeline P --since TIME`).
# Default seeds: for the default shape p17, a leaf pipeline, and p50, which builds a base image
# others use; for the shared shape p3@2026-07-01, an untrusted pipeline compromised from
# mid-year whose time-aware blast radius is about half the fleet. For each seed:
#   - `cachewarden trace --pipeline P --format json` (time-aware), wall time and peak memory,
#     closure size; where its time goes (`--verbose`); then ROUNDS more runs (default 3) as JSON and as text (the default format),
#     each reported as median, min and max;
#   - `cachewarden trace --pipeline P --ignore-time`, the same way;
#   - a recursive CTE computing the time-blind closure from the same seeds in sqlite3
#     (with a timeout), and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${SHAPE:-default}
runs=${1:-1000000}
shift || true
pipelines=("$@")
if [ ${#pipelines[@]} -eq 0 ]; then
    case $shape in
    shared) pipelines=(p3@2026-07-01) ;;
    *) pipelines=(p17 p50) ;;
    esac
fi
cte_timeout=${CTE_TIMEOUT:-600}
rounds=${ROUNDS:-3}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/cachewarden
work=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$work"
case $shape in
shared) db="$work/shared.db" ;;
*) db="$work/fleet.db" ;;
esac

if [ ! -f "$db" ]; then
    "$bin" bench generate --shape "$shape" --runs "$runs" -o "$work/fleet.jsonl"
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

for seed in "${pipelines[@]}"; do
    p=${seed%@*}
    flags=(--pipeline "$p")
    since_us=0
    if [ "$seed" != "$p" ]; then
        flags+=(--since "${seed#*@}")
        since_us=$(($(date -u -d "${seed#*@}" +%s) * 1000000))
    fi
    measure "trace $seed" "$bin" --db "$db" trace "${flags[@]}" --format json
    echo "phases, output to /dev/null: $("$bin" -v --db "$db" trace "${flags[@]}" --format json 2>&1 >/dev/null | grep '^trace: ')"
    read -r t_aware low high < <(timed "$bin" --db "$db" trace "${flags[@]}" --format json)
    echo "trace $seed --format json, $rounds runs: median $t_aware s (min $low, max $high)"
    read -r t_text low high < <(timed "$bin" --db "$db" trace "${flags[@]}")
    echo "trace $seed (text), $rounds runs: median $t_text s (min $low, max $high)"
    measure "trace $seed --ignore-time" "$bin" --db "$db" trace "${flags[@]}" --ignore-time --format json
    echo "phases, output to /dev/null: $("$bin" -v --db "$db" trace "${flags[@]}" --ignore-time --format json 2>&1 >/dev/null | grep '^trace: ')"
    read -r t_blind low high < <(timed "$bin" --db "$db" trace "${flags[@]}" --ignore-time --format json)
    echo "trace $seed --ignore-time --format json, $rounds runs: median $t_blind s (min $low, max $high)"
    start=$(date +%s.%N)
    if cte=$(sed "s/@PIPELINE@/$p/; s/@SINCE@/$since_us/" benches/closure.sql | timeout "$cte_timeout" sqlite3 "$db"); then
        end=$(date +%s.%N)
        t_cte=$(echo "$end - $start" | bc)
        echo "recursive CTE $seed (time ignored): ${t_cte} s, closure: $cte"
        echo "ratio CTE / cachewarden --ignore-time: $(echo "scale=1; $t_cte / $t_blind" | bc)x; CTE / time-aware: $(echo "scale=1; $t_cte / $t_aware" | bc)x"
    else
        echo "recursive CTE $seed: did not finish within ${cte_timeout}s (ratio > $(echo "scale=0; $cte_timeout / $t_blind" | bc)x)"
    fi
done
