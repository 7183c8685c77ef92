#!/usr/bin/env bash
# Benchmark of the purge executor against what a responder scripts today.
#
#   benches/purge.sh [MANIFESTS] [ROUNDS]
#
# Pushes MANIFESTS (default 5000) cache manifests (every TAG_EVERY-th tagged, default all)
# across 10 repositories of a loopback
# registry (distribution, delete enabled), snapshots its storage, and then for each method
# restores the same snapshot, restarts the registry and times deleting every manifest:
#   skopeo    a sequential `skopeo delete` loop (one round: it is slow);
#   raw       parallel HTTP DELETEs by digest, 16 in flight, keep-alive (the registry's limit);
#   cachewarden on an incident whose plan holds the same digests, 16 in flight: the dry run
#             `incident purge` (which records what each manifest is) then `--execute`, timed
#             apart; and `--execute` alone, which looks each manifest up before deleting it.
# Prints the median of ROUNDS (default 3) rounds and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5000}
rounds=${2:-3}
cargo build --release --quiet
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir=$(pwd)/$target_dir
bin=$target_dir/release/cachewarden
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $work/storage}
  delete: {enabled: true}
http: {addr: $host}
YML
start_registry() {
    docker-registry serve "$work/registry.yml" >>"$work/registry.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -fs "http://$host/v2/" >/dev/null && return; sleep 0.1; done
    echo "registry did not start" >&2; exit 1
}
stop_registry() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

start_registry
python3 benches/push_manifests.py "$host" "$count" >"$work/digests.txt"
stop_registry
cp -a "$work/storage" "$work/snapshot"

restore() { rm -rf "$work/storage"; cp -a "$work/snapshot" "$work/storage"; start_registry; }

# The provenance: one pipeline exported every digest.
python3 - "$host" "$work/digests.txt" >"$work/history.jsonl" <<'PY'
import json, sys
host, path = sys.argv[1], sys.argv[2]
refs = [f"{host}/{line.split()[0]}@{line.split()[1]}" for line in open(path)]
print(json.dumps({"v": 1, "type": "run", "pipeline": "bench", "run": "1", "step": "s",
    "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z", "exported": refs}))
PY
cat >"$work/config.toml" <<TOML
[scope]
registries = ["$host"]
[[registry]]
host = "$host"
insecure = true
credentials = "anonymous"
TOML

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

cw() { "$bin" --db "$work/cw.db" --config "$work/config.toml" --no-progress "$@"; }
# A fresh registry and store, with the incident open.
open_incident() {
    restore
    rm -f "$work/cw.db"*
    "$bin" --db "$work/cw.db" import "$work/history.jsonl" 2>/dev/null
    cw incident open --pipeline bench >/dev/null
}
# Runs cachewarden, showing its log only when it fails.
run_cw() { "$@" >/dev/null 2>"$work/cw.log" || { cat "$work/cw.log"; exit 1; }; }
all_done() {
    failed=$(sqlite3 "$work/cw.db" "SELECT count(*) FROM actions WHERE state <> 'done' AND kind = 'delete-manifest'")
    [ "$failed" = 0 ] || echo "cachewarden $1 round $r: $failed actions not done" >&2
}

for t in dry cw both probe raw skopeo; do : >"$work/t_$t"; done
for r in $(seq "$rounds"); do
    open_incident
    t0=$(now)
    run_cw cw incident purge 1 --concurrency 16
    t1=$(now)
    run_cw cw incident purge 1 --execute --yes --no-evidence --concurrency 16
    t2=$(now)
    echo "$t1 - $t0" | bc >>"$work/t_dry"
    echo "$t2 - $t1" | bc >>"$work/t_cw"
    echo "$t2 - $t0" | bc >>"$work/t_both"
    all_done "after a dry run"
    stop_registry

    open_incident
    t0=$(now)
    run_cw cw incident purge 1 --execute --yes --no-evidence --concurrency 16
    t1=$(now)
    echo "$t1 - $t0" | bc >>"$work/t_probe"
    all_done "without a dry run"
    stop_registry

    restore
    t0=$(now)
    python3 benches/raw_delete.py "$host" "$work/digests.txt" 16
    t1=$(now)
    echo "$t1 - $t0" | bc >>"$work/t_raw"
    stop_registry
done

restore
t0=$(now)
while read -r repo digest; do
    skopeo delete --tls-verify=false "docker://$host/$repo@$digest"
done <"$work/digests.txt"
t1=$(now)
echo "$t1 - $t0" | bc >>"$work/t_skopeo"
stop_registry

dry=$(median <"$work/t_dry"); cw=$(median <"$work/t_cw"); both=$(median <"$work/t_both")
probe=$(median <"$work/t_probe"); raw=$(median <"$work/t_raw"); sk=$(median <"$work/t_skopeo")
ratios() { echo "skopeo / cachewarden: $(echo "scale=1; $sk / $1" | bc)x faster; cachewarden / raw: $(echo "scale=2; $1 / $raw" | bc)x"; }
echo "purge of $count manifests, every ${TAG_EVERY:-1}th tagged (median of $rounds rounds; skopeo 1 round):"
echo "  cachewarden incident purge (dry run, records each manifest): ${dry} s"
echo "  cachewarden incident purge --execute after the dry run: ${cw} s ($(echo "scale=0; $count / $cw" | bc) deletes/s), 0 failed actions required"
echo "  cachewarden dry run + execute: ${both} s"
echo "  cachewarden incident purge --execute without a dry run: ${probe} s"
echo "  raw parallel HTTP DELETE (16 in flight): ${raw} s"
echo "  sequential skopeo delete loop: ${sk} s"
echo "  execute after the dry run: $(ratios "$cw")"
echo "  dry run + execute: $(ratios "$both")"
echo "  execute without a dry run: $(ratios "$probe")"
