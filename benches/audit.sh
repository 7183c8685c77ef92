#!/usr/bin/env bash
# Benchmark of `cachewarden audit registry`.
#
#   benches/audit.sh [TAGS] [REPOSITORIES] [CONCURRENCY]
#
# Starts a loopback registry (distribution), pushes TAGS (default 10000) BuildKit cache
# manifests spread over REPOSITORIES (default 100): two blobs uploaded once and mounted into
# every repository, then one manifest PUT per tag from a single parallel curl. Records every
# export but the last 10 in a fresh store, then times two audits with CONCURRENCY (default 16)
# requests in flight: the first fetches every manifest, the second finds each tag at a digest
# it already classified (one HEAD per tag). Prints wall time, the registry's request count
# (from its log) and requests per second for each.
set -euo pipefail
cd "$(dirname "$0")/.."
tags=${1:-10000}
repos=${2:-100}
concurrency=${3:-16}
unrecorded=10
cargo build --release --quiet
bin=$(pwd)/${CARGO_TARGET_DIR:-target}/release/cachewarden
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: info, formatter: text, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $work/storage}
  delete: {enabled: true}
http: {addr: $host}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fs "http://$host/v2/" >/dev/null && break; sleep 0.1; done
curl -fs "http://$host/v2/" >/dev/null || { echo "the registry did not start" >&2; exit 1; }
requests() { grep -c 'response completed' "$work/registry.log" || true; }
# Runs a curl config of many transfers (each entry ends in `next`, the last one's is dropped) in
# parallel and fails unless every status is 201.
transfers() {
    local what=$1 file=$2 codes
    sed -i '$d' "$file"
    codes=$(curl -s --no-progress-meter --parallel --parallel-max 32 -K "$file" | sort | uniq -c) || true
    if [ -n "$(echo "$codes" | grep -v ' 201$')" ]; then
        echo "$what failed: $codes" >&2
        exit 1
    fi
}

sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
config='{"layers":[],"records":[]}'
layer='cache layer'
config_digest=sha256:$(sha "$config")
layer_digest=sha256:$(sha "$layer")

# Blobs: a monolithic upload into the first repository, a cross-repository mount into the rest.
upload() {
    local repo=$1 body=$2 digest=$3 location
    location=$(curl -fsS -o /dev/null -w '%{redirect_url}%header{location}' -X POST "http://$host/v2/$repo/blobs/uploads/")
    case $location in http*) ;; *) location="http://$host$location" ;; esac
    curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' --data-binary "$body" \
        "$location&digest=$digest"
}
upload bench/r0 "$config" "$config_digest"
upload bench/r0 "$layer" "$layer_digest"
: >"$work/mounts.curl"
for r in $(seq 1 $((repos - 1))); do
    for d in "$config_digest" "$layer_digest"; do
        printf 'url = "http://%s/v2/bench/r%d/blobs/uploads/?mount=%s&from=bench/r0"\nrequest = "POST"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nnext\n' \
            "$host" "$r" "$d" >>"$work/mounts.curl"
    done
done
if [ -s "$work/mounts.curl" ]; then
    transfers "blob mounts" "$work/mounts.curl"
fi

# Manifests: one file each (distinct by an annotation), PUT by one parallel curl.
mkdir -p "$work/manifests"
: >"$work/put.curl"
start=$(date +%s%N)
for i in $(seq 0 $((tags - 1))); do
    r=$((i % repos))
    file="$work/manifests/$i.json"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.buildkit.cacheconfig.v0","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}],"annotations":{"bench.seed":"%d"}}' \
        "$config_digest" "${#config}" "$layer_digest" "${#layer}" "$i" >"$file"
    printf 'url = "http://%s/v2/bench/r%d/manifests/t%d"\nrequest = "PUT"\nheader = "Content-Type: application/vnd.oci.image.manifest.v1+json"\ndata-binary = "@%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nnext\n' \
        "$host" "$r" "$i" "$file" >>"$work/put.curl"
done
transfers "manifest pushes" "$work/put.curl"
end=$(date +%s%N)
echo "pushed $tags cache manifests to $repos repositories in $(echo "scale=2; ($end - $start) / 1000000000" | bc)s"

# The provenance: one run per repository exporting its tags, all but the last $unrecorded.
(cd "$work/manifests" && ls | sort -n | head -n $((tags - unrecorded)) | xargs sha256sum) >"$work/digests.txt"
python3 - "$host" "$repos" "$work/digests.txt" >"$work/history.jsonl" <<'PY'
import json, sys
host, repos, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = {}
for line in open(path):
    digest, name = line.split()
    i = int(name.split(".")[0])
    runs.setdefault(i % repos, []).append(f"{host}/bench/r{i % repos}:t{i}@sha256:{digest}")
for r, refs in sorted(runs.items()):
    print(json.dumps({"v": 1, "type": "run", "pipeline": f"ci-{r}", "trust_level": "release", "run": "1",
        "step": "s", "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z",
        "exported": refs}))
PY
cat >"$work/config.toml" <<TOML
[[registry]]
host = "$host"
insecure = true
credentials = "anonymous"
TOML
export CACHEWARDEN_DB=$work/store.db CACHEWARDEN_CONFIG=$work/config.toml
"$bin" import "$work/history.jsonl" 2>/dev/null

audit() {
    local label=$1 before after start end status=0 seconds
    before=$(requests)
    start=$(date +%s%N)
    "$bin" -q audit registry --format json --concurrency "$concurrency" >"$work/$label.json" || status=$?
    end=$(date +%s%N)
    after=$(requests)
    seconds=$(echo "scale=3; ($end - $start) / 1000000000" | bc)
    local n=$((after - before))
    local found
    found=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["summary"]["tags"], d["summary"]["findings"])' "$work/$label.json")
    echo "$label audit: ${found% *} tags in ${seconds}s, $n requests = $(echo "$n / $seconds" | bc) requests/s, ${found#* } new findings (exit $status)"
}
audit first
audit second
