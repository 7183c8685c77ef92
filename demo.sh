#!/usr/bin/env bash
# The cachewarden demo: two cache-poisoning attacks reproduced on private Docker Engines and a
# private registry, traced from the provenance `cachewarden wrap` recorded, purged, and proven
# gone by a rebuild.
#
#   sudo ./demo.sh
#
# Installs the Debian packages it and the tests need (scripts/install-deps.sh), builds
# cachewarden, runs every service on loopback in a temporary directory, and removes all of
# them on exit. What stays: the installed packages and the incident's store, evidence and
# reports, in ./cachewarden-demo-TIME, named at the end.
set -euo pipefail

START_DIR=$PWD
REPO=$(cd "$(dirname "$0")" && pwd)
OUT=$START_DIR/cachewarden-demo-$(date -u +%Y%m%dT%H%M%SZ)
DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd
BUSYBOX=/bin/busybox
APPLETS=(sh cat ls cp mv rm mkdir touch echo printf find sha256sum head tail wc grep sed sort env test true false sleep date id chmod ln stat du dd tee xargs tar)
T=

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
    say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    say() { printf '\n== %s\n' "$*"; }
fi
note() { printf '   %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- What the machine needs -----------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "demo: it installs Debian packages and starts private Docker Engines, which need root: run  sudo $0" >&2
    exit 1
fi
say "system packages (scripts/install-deps.sh)"
"$REPO/scripts/install-deps.sh"
command -v cargo >/dev/null || die "cargo is not on PATH (as root: sudo env PATH=\"\$PATH\" $0)"

SECONDS=0
# The dev profile: `cargo test` builds the same dependencies next, and a release build of
# them took about six minutes of the demo on two cores.
say "building cachewarden (cargo build)"
(cd "$REPO" && cargo build --locked --bin cachewarden)
CW=${CARGO_TARGET_DIR:-$REPO/target}/debug/cachewarden
[ -x "$CW" ] || die "no binary at $CW"
mkdir -p "$OUT"

# --- Services, all under one temporary directory --------------------------------------------
T=$(mktemp -d /tmp/cwdemo.XXXXXX)
PIDS=()

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    if [ -n "$T" ] && [ -d "$T" ]; then
        for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
            kill -TERM "${PIDS[i]}" 2>/dev/null
            for _ in $(seq 100); do kill -0 "${PIDS[i]}" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "${PIDS[i]}" 2>/dev/null
            wait "${PIDS[i]}" 2>/dev/null
        done
        # Shims and anything else still running from the directory.
        for cmdline in /proc/[0-9]*/cmdline; do
            pid=${cmdline#/proc/}; pid=${pid%/cmdline}
            [ "$pid" = $$ ] && continue
            { tr '\0' ' ' <"$cmdline"; } 2>/dev/null | grep -qF "$T/" && kill -KILL "$pid" 2>/dev/null
        done
        awk -v t="$T" 'index($2, t "/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null
        done
        rm -rf "$T"
    fi
    if [ "$status" -ne 0 ]; then
        echo "demo: failed (exit $status); everything it started is stopped and removed" >&2
        [ ! -d "$OUT" ] || echo "demo: what it recorded so far is in $OUT" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

say "starting a registry, a containerd and four Docker Engines in $T"
mkdir -p "$T/registry" "$T/containerd"
cat >"$T/registry.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $T/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
EOF
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 &
PIDS+=($!)
wait_for 20 grep -q 'listening on' "$T/registry.log" || die "the registry did not start: $(tail -3 "$T/registry.log")"
REG=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$T/registry.log" | head -1 | cut -d' ' -f3)
note "registry   http://$REG (deletes enabled)"

# One private containerd: dockerd would otherwise use the system's, and leave state there.
cat >"$T/containerd.toml" <<EOF
version = 2
root = "$T/containerd/root"
state = "$T/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$T/containerd/sock"
[ttrpc]
  address = "$T/containerd/sock.ttrpc"
EOF
containerd --config "$T/containerd.toml" >"$T/containerd.log" 2>&1 &
PIDS+=($!)
wait_for 20 test -S "$T/containerd/sock" || die "containerd did not start: $(tail -3 "$T/containerd.log")"

start_dockerd() { # start_dockerd NAME
    local d=$T/$1
    mkdir -p "$d/data" "$d/exec" "$d/client"
    printf '{"deprecated-key-path": "%s/key.json"}\n' "$d" >"$d/daemon.json"
    "$DOCKERD" --config-file "$d/daemon.json" --containerd "$T/containerd/sock" \
        --containerd-namespace "cwdemo-$1" --containerd-plugins-namespace "cwdemo-$1-plugins" \
        --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/pid" --host "unix://$d/sock" \
        --bridge=none --iptables=false --ip-forward=false >"$d/dockerd.log" 2>&1 &
    PIDS+=($!)
}
BUILDERS=(ci-shared ci-main ci-release outsider)
for b in "${BUILDERS[@]}"; do start_dockerd "$b"; done
for b in "${BUILDERS[@]}"; do
    wait_for 60 "$DOCKER" -H "unix://$T/$b/sock" version || die "dockerd $b did not start: $(tail -3 "$T/$b/dockerd.log")"
    note "dockerd    $b  unix://$T/$b/sock"
done

export DOCKER_BUILDKIT=1 BUILDKIT_PROGRESS=plain NO_COLOR=1
# The store and the evidence beside it outlive the demo; the config names private sockets.
export CACHEWARDEN_DB=$OUT/cachewarden.db CACHEWARDEN_CONFIG=$T/config.toml
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH BUILDX_BUILDER
{
    for b in ci-shared ci-main ci-release; do
        printf '[[builder]]\nname = "%s"\ndriver = "docker"\nendpoint = "unix://%s/%s/sock"\n\n' "$b" "$T" "$b"
    done
    printf '[[registry]]\nhost = "%s"\ninsecure = true\ncredentials = "anonymous"\n\n' "$REG"
    printf '[scope]\nregistries = ["%s"]\nbuilders = ["ci-shared", "ci-main", "ci-release"]\n' "$REG"
} >"$CACHEWARDEN_CONFIG"
note "store      $CACHEWARDEN_DB (SQLite)"
note "config     $CACHEWARDEN_CONFIG (the outsider's builder is not in it)"

docker_on() { # docker_on BUILDER ARGS...
    local b=$1; shift
    DOCKER_HOST=unix://$T/$b/sock DOCKER_CONFIG=$T/$b/client "$DOCKER" "$@"
}

LOG=$OUT/builds.log
# ci BUILDER PIPELINE RUN TRUST docker ARGS...: one CI job step, recorded by the hook, run in
# the directory that holds the checkouts.
ci() {
    local b=$1 pipeline=$2 run=$3 trust=$4; shift 5
    printf '   %-11s %-14s %s\n' "$b" "$pipeline/$run" "docker $*"
    if ! (cd "$T/src" && DOCKER_HOST=unix://$T/$b/sock DOCKER_CONFIG=$T/$b/client CACHEWARDEN_BUILDER=$b \
        "$CW" wrap --pipeline "$pipeline" --run "$run" --trust-level "$trust" -- "$DOCKER" "$@") >>"$LOG" 2>&1; then
        tail -20 "$LOG" >&2
        die "the wrapped command failed"
    fi
}

# checkout FIXTURE DIR [EXTRA-DOCKERFILE-LINE]: a project's source at a commit, in $T/src/DIR.
checkout() {
    local src=$REPO/tests/fixtures/scenarios/$1 dir=$T/src/$2
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$src"/* "$dir"/
    sed -i "s|{{BASE}}|$REG/base:1|" "$dir/Dockerfile"
    [ -z "${3:-}" ] || printf '%s\n' "$3" >>"$dir/Dockerfile"
    echo "$2"
}

# files BUILDER IMAGE DIR: what the directory holds in the image, read without running it.
files() {
    local out=$T/out.$RANDOM container
    container=$(docker_on "$1" create "$2" sh)
    docker_on "$1" cp "$container:$3" "$out" >/dev/null
    docker_on "$1" rm "$container" >/dev/null
    ls "$out" | tr '\n' ' '
    rm -rf "$out"
}

digest_of() { grep -o 'digest: sha256:[0-9a-f]*' "$LOG" | tail -1 | cut -d' ' -f2; }

say "a base image in the registry"
rootfs=$T/rootfs
mkdir -p "$rootfs"/{bin,etc,root,tmp,dev,proc,sys}
chmod 1777 "$rootfs/tmp"
cp "$BUSYBOX" "$rootfs/bin/busybox"
for a in "${APPLETS[@]}"; do ln -s busybox "$rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
tar --numeric-owner -C "$rootfs" -cf "$T/rootfs.tar" .
docker_on ci-shared import "$T/rootfs.tar" "$REG/base:1" >/dev/null
docker_on ci-shared push "$REG/base:1" >/dev/null
note "$REG/base:1 (busybox)"

# --- Scenario 1 -------------------------------------------------------------------------------
say "scenario 1: a shared cache mount across projects (builder ci-shared)"
note "an untrusted fork's build writes sitecustomize.py into the pip cache mount; the trusted"
note "webapp's next build on the same builder installs it; docs uses its own mount id"
fork=$(checkout pip-plant fork)
webapp=$(checkout pip-app webapp)
echo flask-2.0.1 >"$T/src/$webapp/requirements.txt"
docs=$(checkout npm-docs docs)
echo markdown-it-13 >"$T/src/$docs/package.txt"
INLINE=(--build-arg BUILDKIT_INLINE_CACHE=1)
ci ci-shared fork-pr 1 untrusted docker build --network=none -t fork-pr:1 "$fork"
ci ci-shared webapp 1 release docker build --network=none "${INLINE[@]}" -t "$REG/webapp:1" "$webapp"
ci ci-shared webapp 1 release docker push "$REG/webapp:1"
ci ci-shared docs 1 internal docker build --network=none "${INLINE[@]}" -t "$REG/docs:1" "$docs"
ci ci-shared docs 1 internal docker push "$REG/docs:1"
note "webapp:1 /app/site: $(files ci-shared "$REG/webapp:1" /app/site)  <- poisoned"

say "scenario 1: trace --pipeline fork-pr"
"$CW" trace --pipeline fork-pr
say "scenario 1: incident open --pipeline fork-pr"
"$CW" incident open --pipeline fork-pr --title "untrusted fork wrote to the shared pip cache"
say "scenario 1: incident purge 1 --execute --yes"
"$CW" incident purge 1 --execute --yes
say "scenario 1: rebuild"
ci ci-shared webapp 2 release docker build --network=none "${INLINE[@]}" -t "$REG/webapp:1" "$webapp"
ci ci-shared docs 2 internal docker build --network=none "${INLINE[@]}" -t "$REG/docs:1" "$docs"
site=$(files ci-shared "$REG/webapp:1" /app/site)
note "webapp rebuild /app/site: $site"
case "$site" in *sitecustomize.py*) die "the rebuild still holds sitecustomize.py" ;; esac
note "clean: the planted file is gone; docs kept its mount cache and layers"

# --- Scenario 2 -------------------------------------------------------------------------------
say "scenario 2: a poisoned remote cache (builders ci-main, ci-release; outsider unrecorded)"
note "app pushes its inline cache to $REG/app:cache; an outsider with push access overwrites"
note "that ref from its own builder; release imports it and pushes its own cache, which"
note "downstream imports"
app=$(checkout pip-app app)
echo flask-2.0.1 >"$T/src/$app/requirements.txt"
ci ci-main app 1 release docker build --network=none "${INLINE[@]}" -t "$REG/app:cache" "$app"
ci ci-main app 1 release docker push "$REG/app:cache"
next=$(checkout pip-app outsider-app)
echo flask-2.0.2 >"$T/src/$next/requirements.txt"
plant=$(checkout pip-plant outsider-plant)
note "outsider    (not recorded)   docker build + push $REG/app:cache with a planted pip cache"
docker_on outsider build --network=none -t plant:1 "$T/src/$plant" >>"$LOG" 2>&1
docker_on outsider build --network=none "${INLINE[@]}" -t "$REG/app:cache" "$T/src/$next" >>"$LOG" 2>&1
docker_on outsider push "$REG/app:cache" >>"$LOG" 2>&1
EVIL=$(digest_of)
note "the outsider's digest: $EVIL"
release=$(checkout pip-app release)
echo flask-2.0.2 >"$T/src/$release/requirements.txt"
RELEASE=(--network=none --cache-from "$REG/app:cache" "${INLINE[@]}" --label org.opencontainers.image.title=release -t "$REG/release:cache" "$release")
ci ci-release release 1 release docker build "${RELEASE[@]}"
ci ci-release release 1 release docker push "$REG/release:cache"
downstream=$(checkout pip-app downstream 'RUN ls /app/site > /app/contents')
echo flask-2.0.2 >"$T/src/$downstream/requirements.txt"
DOWNSTREAM=(--network=none --cache-from "$REG/release:cache" -t "$REG/downstream:1" "$downstream")
ci ci-main downstream 1 internal docker build "${DOWNSTREAM[@]}"
note "release /app/site:    $(files ci-release "$REG/release:cache" /app/site)  <- poisoned"
note "downstream /app/site: $(files ci-main "$REG/downstream:1" /app/site)  <- poisoned"

say "scenario 2: trace --cache-ref $REG/app@$EVIL"
"$CW" trace --cache-ref "$REG/app@$EVIL"
say "scenario 2: incident open --cache-ref $REG/app@$EVIL"
"$CW" incident open --cache-ref "$REG/app@$EVIL" --title "outsider overwrote the app inline cache"
say "scenario 2: incident purge 2 --execute --yes"
"$CW" incident purge 2 --execute --yes
say "scenario 2: rebuild"
ci ci-release release 2 release docker build "${RELEASE[@]}"
ci ci-release release 2 release docker push "$REG/release:cache"
ci ci-main downstream 2 internal docker build "${DOWNSTREAM[@]}"
for check in "ci-release $REG/release:cache" "ci-main $REG/downstream:1"; do
    site=$(files $check /app/site)
    note "${check#* } /app/site: $site"
    case "$site" in *sitecustomize.py*) die "the rebuild still holds sitecustomize.py" ;; esac
done
note "clean: the poisoned refs are deleted, both builders pruned, the rebuilds hold no planted file"

# --- Verify, close, report -------------------------------------------------------------------
# Every target must be gone (or accepted with a reason, `incident accept ID SEQ --reason`):
# `close` verifies again and refuses otherwise; no --force.
for id in 1 2; do
    say "incident $id: verify"
    "$CW" incident verify "$id" || die "incident $id does not verify clean"
    say "incident $id: close"
    "$CW" incident close "$id"
    "$CW" incident report "$id" -o "$OUT/incident-$id.md"
    grep -q '^- Status: \*\*closed\*\*' "$OUT/incident-$id.md" || die "the report of incident $id does not say closed"
done
[ -z "${SUDO_UID:-}" ] || chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$OUT"
say "done in ${SECONDS}s"
note "kept in $OUT:"
note "  cachewarden.db  the store; evidence/  what was saved before each deletion"
note "  incident-1.md, incident-2.md  the reports; builds.log  the builds' output"
note "stopping the registry, containerd and the Docker Engines, removing $T"
say "incident list"
"$CW" incident list
