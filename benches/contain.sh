#!/usr/bin/env bash
# Time to contain: an incident whose blast radius holds MANIFESTS cache manifests (default 2000)
# in 20 repositories of a loopback registry (distribution, delete enabled) and 40 cache mounts
# on 10 private Docker 20.10 builders, from `incident open` to a clean `incident verify`.
#
#   benches/contain.sh [ROUNDS] [MANIFESTS]
#
# Setup (reported apart, not part of the goal): a registry, 10 dockerds (each with its own
# containerd, data root, exec root, pidfile and unix socket, no networking) with busybox
# imported as `base:1`; on each builder a clean pipeline's build writes one cache mount, then a
# compromised pipeline's build writes 4 (`RUN --mount=type=cache,id=...`, `--network=none`);
# the compromised pipeline's cache exports are pushed as manifests (a clean pipeline's too).
# The provenance is one `import` file, as a fleet's hooks would send it: each build a run on its
# builder with the mounts it wrote, the builder records it created (listed before and after it)
# and, spread over the compromised runs, the cache refs they exported.
#
# Timed each round on that state: `incident open --pipeline`, the dry run `incident purge`,
# `incident purge --execute --yes` (with evidence) and `incident verify`, then the floor on the
# same state made again: raw parallel HTTP DELETEs of the same digests (benches/raw_delete.py,
# 16 in flight) beside prunes of the same record ids on the 10 builders at once (the Engine's
# `POST /build/prune` with an `id` filter, which Docker 20.10 takes one id a call). Every round checks that
# the incident is contained and that nothing of the clean pipeline was touched.
# Prints the median of ROUNDS (default 3) rounds per phase, the total, the floor and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
count=${2:-2000}
builders=10
repos=20
clean_count=200
cargo build --release --quiet
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir=$(pwd)/$target_dir
bin=$target_dir/release/cachewarden
docker_cli=/usr/bin/docker
# A short path: the dockerds' and containerds' unix sockets live under it.
work=$(mktemp -d /tmp/cwc.XXXXXX)
export DOCKER_BUILDKIT=1 BUILDKIT_PROGRESS=plain DOCKER_CONFIG=$work/docker-config
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
mkdir -p "$DOCKER_CONFIG"

reg_pid=
declare -a dockerd_pids=() containerd_pids=()
cleanup() {
    trap - EXIT INT TERM
    set +e
    [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null
    for p in "${dockerd_pids[@]}"; do kill "$p" 2>/dev/null; done
    for _ in $(seq 100); do
        alive=0
        for p in "${dockerd_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.2
    done
    for p in "${dockerd_pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    for p in "${containerd_pids[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${containerd_pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    # Shims outlive their containerd; each names its containerd's socket, under $work.
    for d in /proc/[0-9]*; do
        [ "${d#/proc/}" = $$ ] && continue
        { tr '\0' ' ' <"$d/cmdline" | grep -qF "$work/" && kill -9 "${d#/proc/}"; } 2>/dev/null
    done
    wait 2>/dev/null
    # Whatever the daemons left mounted under their roots, deepest first.
    awk -v p="$work/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$(printf '%b' "$m")" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# Waits for these background jobs (never the daemons), failing when one failed.
wait_all() { local p; for p in "$@"; do wait "$p" || { echo "a setup job failed" >&2; exit 1; }; done; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sock() { echo "$work/d$1/sock"; }
dk() { local i=$1; shift; DOCKER_HOST=unix://$(sock "$i") "$docker_cli" "$@"; }
api() { curl -fsS --unix-socket "$(sock "$1")" "http://docker$2"; }

# --- Registry -------------------------------------------------------------------------------
host=127.0.0.1:$(free_port)
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
    reg_pid=$!
    for _ in $(seq 100); do curl -fs "http://$host/v2/" >/dev/null && return; sleep 0.1; done
    echo "registry did not start" >&2; exit 1
}
stop_registry() { kill "$reg_pid"; wait "$reg_pid" 2>/dev/null || true; reg_pid=; }

# --- Builders -------------------------------------------------------------------------------
start_builder() {
    local i=$1 d=$work/d$1
    mkdir -p "$d"/{data,exec,containerd}
    cat >"$d/containerd/config.toml" <<TOML
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd/sock"
[ttrpc]
  address = "$d/containerd/sock.ttrpc"
TOML
    containerd --config "$d/containerd/config.toml" >"$d/containerd.log" 2>&1 </dev/null &
    containerd_pids+=($!)
    for _ in $(seq 200); do [ -S "$d/containerd/sock" ] && break; sleep 0.05; done
    echo '{}' >"$d/daemon.json"
    dockerd --config-file "$d/daemon.json" --containerd "$d/containerd/sock" \
        --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/pid" \
        --host "unix://$d/sock" --bridge=none --iptables=false --ip-forward=false \
        >"$d/dockerd.log" 2>&1 </dev/null &
    dockerd_pids+=($!)
}
wait_builder() {
    for _ in $(seq 600); do api "$1" /_ping >/dev/null 2>&1 && return; sleep 0.1; done
    echo "dockerd $1 did not start:" >&2; tail -5 "$work/d$1/dockerd.log" >&2; exit 1
}

# The base image: busybox-static and its applets, as the tests make it.
make_base() {
    local r=$work/rootfs
    mkdir -p "$r"/{bin,etc,root,tmp,dev,proc,sys}
    chmod 1777 "$r/tmp"
    cp /bin/busybox "$r/bin/busybox"
    for a in sh cat ls cp mv rm mkdir touch echo find sha256sum head dd true; do
        ln -s busybox "$r/bin/$a"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
    echo 'root:x:0:' >"$r/etc/group"
    tar --numeric-owner -C "$r" -cf "$work/rootfs.tar" .
}

# The builder's records as `id type created_at_micros last_used_micros size` lines.
records() {
    api "$1" /system/df | python3 -c '
import json, sys, datetime
def micros(t):
    if not t: return 0
    t = t.rstrip("Z")
    head, _, frac = t.partition(".")
    base = datetime.datetime.strptime(head[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(base.timestamp()) * 1000000 + int((frac + "000000")[:6])
for r in json.load(sys.stdin).get("BuildCache") or []:
    print(r["ID"], r["Type"], micros(r.get("CreatedAt")), micros(r.get("LastUsedAt")), r.get("Size", 0), json.dumps(r.get("Description", "")))
'
}

iso_now() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }

# One recorded build on builder $1: pipeline $2, run $3, mounts "id:target ..." in $4.
# Writes a run line (without exports) to $work/runs/$2-$1.json.
build_run() {
    local i=$1 pipeline=$2 run=$3 mounts=$4 ctx=$work/ctx/$2-$1
    mkdir -p "$ctx" "$work/runs"
    {
        echo "FROM base:1"
        for m in $mounts; do
            local id=${m%%:*} target=${m#*:}
            echo "RUN --mount=type=cache,id=$id,target=$target echo $nonce-$pipeline > $target/stamp && dd if=/dev/urandom of=$target/blob bs=64k count=4 2>/dev/null"
        done
    } >"$ctx/Dockerfile"
    # Listing is a use of the mounts used since the last listing: list twice (as `wrap` does).
    records "$i" >/dev/null
    records "$i" >"$ctx/before"
    local started finished
    started=$(iso_now)
    dk "$i" build --network=none -q "$ctx" >"$ctx/build.log" 2>&1 \
        || { cat "$ctx/build.log" >&2; exit 1; }
    finished=$(iso_now)
    records "$i" >"$ctx/after"
    python3 - "$ctx" "$pipeline" "$run" "b$i" "$started" "$finished" "$mounts" >"$work/runs/$pipeline-$i.json" <<'PY'
import json, sys
ctx, pipeline, run, builder, started, finished, mounts = sys.argv[1:]
def read(name):
    out = {}
    for line in open(f"{ctx}/{name}"):
        rid, typ, created, used, size, desc = line.rstrip("\n").split(" ", 5)
        out[rid] = {"id": rid, "type": typ, "description": json.loads(desc),
                    "created_at": int(created), "last_used_at": int(used), "size": int(size)}
    return out
before, after = read("before"), read("after")
created = [r for k, r in after.items() if k not in before]
reused = [r for k, r in after.items() if k in before and
          (r["last_used_at"] != before[k]["last_used_at"])]
print(json.dumps({
    "v": 1, "type": "run", "pipeline": pipeline, "run": run, "step": "Dockerfile",
    "builder": builder, "started_at": started, "finished_at": finished, "status": "succeeded",
    "mounts": [{"id": m.split(":", 1)[0], "target": m.split(":", 1)[1]} for m in mounts.split()],
    "records": {"created": created, "reused": reused},
}))
PY
}

tainted_mounts="cache-0:/cache/0 cache-1:/cache/1 cache-2:/cache/2 cache-3:/cache/3"
clean_mounts="clean:/cache/clean"

# Fills the builders (the clean pipeline's build, then the compromised one's) and writes the
# provenance with the compromised runs' exports spread over them.
fill_builders() {
    nonce=$(date +%s%N)
    rm -rf "$work/ctx" "$work/runs"
    local i pids=()
    for i in $(seq 0 $((builders - 1))); do
        (build_run "$i" release "$nonce-$i" "$clean_mounts" && build_run "$i" forks-pr "$nonce-$i" "$tainted_mounts") &
        pids+=($!)
    done
    wait_all "${pids[@]}"
    python3 - "$work" "$host" "$builders" >"$work/history.jsonl" <<'PY'
import json, sys
work, host, builders = sys.argv[1], sys.argv[2], int(sys.argv[3])
def refs(path):
    return [f"{host}/{repo}@{digest}" for repo, digest in (l.split() for l in open(path))]
tainted, clean = refs(f"{work}/digests.txt"), refs(f"{work}/clean-digests.txt")
print(json.dumps({"v": 1, "type": "pipeline", "name": "forks-pr", "trust_level": "untrusted"}))
print(json.dumps({"v": 1, "type": "pipeline", "name": "release", "trust_level": "release"}))
for pipeline, exports in (("release", clean), ("forks-pr", tainted)):
    for i in range(builders):
        run = json.load(open(f"{work}/runs/{pipeline}-{i}.json"))
        run["exported"] = exports[i::builders]
        print(json.dumps(run))
PY
}

# The registry as pushed, restored.
restore_registry() {
    [ -n "$reg_pid" ] && stop_registry
    rm -rf "$work/storage"
    cp -a "$work/snapshot" "$work/storage"
    start_registry
}

t_setup0=$(now)
start_registry
REPOS=$repos python3 benches/push_manifests.py "$host" "$count" >"$work/digests.txt"
REPOS=$repos SALT=clean python3 benches/push_manifests.py "$host" "$clean_count" >"$work/clean-digests.txt"
stop_registry
cp -a "$work/storage" "$work/snapshot"
make_base
for i in $(seq 0 $((builders - 1))); do start_builder "$i"; done
for i in $(seq 0 $((builders - 1))); do wait_builder "$i"; done
pids=()
for i in $(seq 0 $((builders - 1))); do dk "$i" import "$work/rootfs.tar" base:1 >/dev/null & pids+=($!); done
wait_all "${pids[@]}"

{
    cat <<TOML
[scope]
registries = ["$host"]
builders = [$(for i in $(seq 0 $((builders - 1))); do printf '"b%s",' "$i"; done | sed 's/,$//')]
[[registry]]
host = "$host"
insecure = true
credentials = "anonymous"
[audit]
helper_image = "base:1"
[purge]
concurrency = 16
TOML
    for i in $(seq 0 $((builders - 1))); do
        printf '[[builder]]\nname = "b%s"\ndriver = "docker"\nendpoint = "unix://%s"\n' "$i" "$(sock "$i")"
    done
} >"$work/config.toml"
t_setup1=$(now)
echo "setup: registry with $count + $clean_count manifests in $repos repositories, $builders dockerds: $(echo "$t_setup1 - $t_setup0" | bc) s" >&2

cw() { "$bin" --db "$work/cw.db" --config "$work/config.toml" --no-progress "$@"; }
# Runs a timed cachewarden phase; prints its log when it exits other than $1.
phase() {
    local want=$1 name=$2; shift 2
    local t0 t1 rc=0
    t0=$(now)
    # Each line of the log is stamped with the time it came.
    "$@" >"$work/$name.out" 2> >(while IFS= read -r l; do echo "$(now) $l"; done >"$work/$name.err") || rc=$?
    wait $! 2>/dev/null || true
    t1=$(now)
    if [ "$rc" != "$want" ]; then
        echo "round $round: $name exited $rc:" >&2; tail -20 "$work/$name.err" >&2; exit 1
    fi
    echo "$t1 - $t0" | bc >>"$work/t_$name"
}

# Everything the plan prunes on builder $1, from what the provenance recorded: the compromised
# run's created records and its mounts' records (matched by target path, as on Docker 20.10).
prune_ids() {
    python3 - "$work/runs/forks-pr-$1.json" "$work/ctx/forks-pr-$1/after" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
ids = {r["id"] for r in run["records"]["created"]}
targets = [m["target"] for m in run["mounts"]]
for line in open(sys.argv[2]):
    rid, typ, _, _, _, desc = line.rstrip("\n").split(" ", 5)
    desc = json.loads(desc)
    if typ == "exec.cachemount" and any(desc.startswith(f"cached mount {t} from ") for t in targets):
        ids.add(rid)
print(" ".join(sorted(ids)))
PY
}

# Whether the compromised pipeline's manifests and mounts are gone and the clean one's stay.
check_contained() {
    python3 - "$host" "$work/digests.txt" "$work/clean-digests.txt" <<'PY'
import http.client, sys
host = sys.argv[1]
conn = http.client.HTTPConnection(host)
def present(repo, digest):
    conn.request("HEAD", f"/v2/{repo}/manifests/{digest}",
                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    r = conn.getresponse(); r.read()
    return r.status == 200
left = sum(present(*l.split()) for l in open(sys.argv[2]))
lost = sum(not present(*l.split()) for l in open(sys.argv[3]))
if left or lost:
    raise SystemExit(f"{left} tainted manifests left, {lost} clean manifests deleted")
PY
    local i listing
    for i in $(seq 0 $((builders - 1))); do
        listing=$(records "$i" | awk '$2 == "exec.cachemount"')
        if grep -q 'cached mount /cache/[0-3] ' <<<"$listing"; then
            echo "round $round: b$i still holds tainted mount records" >&2; exit 1
        fi
        grep -q 'cached mount /cache/clean ' <<<"$listing" \
            || { echo "round $round: b$i lost the clean mount" >&2; exit 1; }
    done
}

for t in open dry execute evidence verify total setup floor_registry floor_builders floor; do : >"$work/t_$t"; done
for round in $(seq "$rounds"); do
    # The state: registry as pushed, builders filled, a fresh store holding the provenance.
    s0=$(now)
    restore_registry
    fill_builders
    rm -f "$work/cw.db"* && rm -rf "$work/evidence"
    "$bin" --db "$work/cw.db" --config "$work/config.toml" import "$work/history.jsonl" \
        >/dev/null 2>"$work/import.err" || { cat "$work/import.err" >&2; exit 1; }
    s1=$(now)
    echo "$s1 - $s0" | bc >>"$work/t_setup"

    phase 0 open cw -v incident open --pipeline forks-pr --title contain
    phase 0 dry cw -v incident purge 1
    exec_t0=$(now)
    phase 0 execute cw -v incident purge 1 --execute --yes --evidence-dir "$work/evidence"
    phase 0 verify cw -v incident verify 1
    # --execute saves evidence first, then acts: its log line says when the evidence was in.
    saved=$(awk '/ evidence saved in / {print $1}' "$work/execute.err")
    echo "$saved - $exec_t0" | bc >>"$work/t_evidence"
    echo "$(tail -1 "$work/t_open") + $(tail -1 "$work/t_dry") + $(tail -1 "$work/t_execute") + $(tail -1 "$work/t_verify")" | bc >>"$work/t_total"
    echo "round $round: open $(tail -1 "$work/t_open") dry $(tail -1 "$work/t_dry") execute $(tail -1 "$work/t_execute") verify $(tail -1 "$work/t_verify") total $(tail -1 "$work/t_total") s" >&2
    check_contained
    # BENCH_LOGS=DIR keeps each round's cachewarden output there.
    if [ -n "${BENCH_LOGS:-}" ]; then
        mkdir -p "$BENCH_LOGS"
        find "$work/evidence" -type f -printf '%T@ %P\n' | sort -n >"$BENCH_LOGS/$round-evidence-times"
        for f in open dry execute verify; do
            cp "$work/$f.out" "$BENCH_LOGS/$round-$f.out"; cp "$work/$f.err" "$BENCH_LOGS/$round-$f.err"
        done
    fi

    # The floor, on the same state made again.
    restore_registry
    fill_builders
    for i in $(seq 0 $((builders - 1))); do prune_ids "$i" >"$work/prune-$i"; done
    floor_pids=()
    t0=$(now)
    ( python3 benches/raw_delete.py "$host" "$work/digests.txt" 16; now >"$work/done-registry" ) &
    floor_pids+=($!)
    for i in $(seq 0 $((builders - 1))); do
        (
            # Docker 20.10's prune API takes one id filter a call.
            for id in $(cat "$work/prune-$i"); do
                curl -fsS -X POST --unix-socket "$(sock "$i")" \
                    "http://docker/build/prune?all=1&filters=%7B%22id%22%3A%5B%22$id%22%5D%7D" >/dev/null
            done
            now >"$work/done-b$i"
        ) &
        floor_pids+=($!)
    done
    wait_all "${floor_pids[@]}"
    echo "$(cat "$work/done-registry") - $t0" | bc >>"$work/t_floor_registry"
    echo "$(cat "$work"/done-b* | sort -n | tail -1) - $t0" | bc >>"$work/t_floor_builders"
    echo "$(cat "$work"/done-* | sort -n | tail -1) - $t0" | bc >>"$work/t_floor"
    rm -f "$work"/done-*
    check_contained
    echo "round $round: floor: registry $(tail -1 "$work/t_floor_registry") builders $(tail -1 "$work/t_floor_builders") both $(tail -1 "$work/t_floor") s" >&2
done

m() { median <"$work/t_$1"; }
actions=$(sqlite3 "$work/cw.db" "SELECT kind || ' ' || count(*) FROM actions GROUP BY kind" | tr '\n' ',' | sed 's/,$//; s/,/, /g')
echo "time to contain: $count cache manifests in $repos repositories, $((builders * 4)) cache mounts on $builders Docker 20.10 builders (median of $rounds rounds)"
echo "  plan: $actions"
echo "  setup per round (restore registry, builds, import; not timed below): $(m setup) s"
echo "  incident open:              $(m open) s"
echo "  incident purge (dry run):   $(m dry) s"
echo "  incident purge --execute:   $(m execute) s (saving evidence: $(m evidence) s, then acting)"
echo "  incident verify:            $(m verify) s"
echo "  total:                      $(m total) s (goal: at most 60 s)"
echo "  floor, registry (raw HTTP DELETE, 16 in flight): $(m floor_registry) s"
echo "  floor, builder prunes (10 at once):              $(m floor_builders) s"
echo "  floor, registry and builder prunes at once:      $(m floor) s"
echo "  total / floor: $(echo "scale=1; $(m total) / $(m floor)" | bc)x"
