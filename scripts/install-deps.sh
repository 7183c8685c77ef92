#!/usr/bin/env bash
# Installs the Debian 12 packages the demo and the tests need. Idempotent: when they are all
# installed it changes nothing (and needs no network). Needs root.
#
# What it changes on the machine, besides installing packages: on Debian 12, where
# docker-buildx is not packaged, it adds Debian 13 (trixie) as an apt source
# (/etc/apt/sources.list.d/cachewarden-trixie.sources) pinned at priority 100
# (/etc/apt/preferences.d/cachewarden-trixie), so that apt takes a package from trixie only when
# asked for it by name (`docker-buildx/trixie`): installed and new packages keep coming from
# Debian 12. It starts and stops no service itself; installing `postgresql` makes Debian's
# default cluster (`15/main`), which the package starts where the machine lets packages start
# services; `pgbouncer` likewise makes a default service. The tests use neither: they start
# clusters and poolers of their own.
set -euo pipefail

# One package a line. Docker Engine 26, the second engine of the tests, is unpacked beside
# them by scripts/install-docker26.sh, which this runs last.
PACKAGES=(
    docker.io        # dockerd and the docker 20.10 client, with containerd and runc
    docker-registry  # distribution's registry server
    skopeo           # registry look-ups in the tests and the runbooks
    busybox-static   # the root filesystem of the test images
    apache2-utils    # htpasswd, for the registry's basic auth in the tests
    openssl          # certificates for the TLS registry in the tests
    jq               # the runbooks read JSON output with it
    curl             # an HTTPS client for the collector's TLS test
    postgresql       # the PostgreSQL store's tests start private clusters with its initdb
    pgbouncer        # the PostgreSQL store's tests run behind it in transaction pooling mode
)
# From Debian 13 on Debian 12 (see above); from the default sources where it is packaged.
TRIXIE_PACKAGES=(
    docker-buildx    # `docker buildx build` against the same engine
)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: needs root: sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive

BUILDX=/usr/libexec/docker/cli-plugins/docker-buildx
install_packages() {
    echo "install-deps: installing ${missing[*]}"
    apt-get update
    apt-get install -y --no-install-recommends "${PACKAGES[@]}"

    if apt-cache policy "${TRIXIE_PACKAGES[@]}" | grep -q 'Candidate: (none)' ||
        [ -z "$(apt-cache policy "${TRIXIE_PACKAGES[@]}" 2>/dev/null)" ]; then
        cat >/etc/apt/sources.list.d/cachewarden-trixie.sources <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
        printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' \
            >/etc/apt/preferences.d/cachewarden-trixie
        apt-get update
    fi
    if [ -e /etc/apt/sources.list.d/cachewarden-trixie.sources ]; then
        apt-get install -y --no-install-recommends "${TRIXIE_PACKAGES[@]/%//trixie}"
    else
        apt-get install -y --no-install-recommends "${TRIXIE_PACKAGES[@]}"
    fi
}

missing=()
for p in "${PACKAGES[@]}" "${TRIXIE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ] && [ -x "$BUILDX" ]; then
    echo "install-deps: every package is installed"
else
    install_packages
fi
# The second engine of the tests: Docker 26 and its containerd, unpacked beside 20.10. It
# changes nothing when they are there.
"$(dirname "$0")/install-docker26.sh"
