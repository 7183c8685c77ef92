#!/usr/bin/env bash
# Installs Debian 13's Docker Engine 26 (docker.io), its client (docker-cli, whose `docker
# build` runs through buildx) and containerd 1.7 beside Debian 12's Docker 20.10, unpacked
# into a private prefix with `dpkg-deb -x`: nothing of Debian 12 is replaced and dpkg does
# not know of them. The tests start it as a second engine (see
# tests/harness/dockerd.rs, `Engine::Docker26`).
#
# The trixie source is pinned at priority 100 (as for buildx in .ci/run), so apt installs
# nothing from it unless asked; `apt-get download` fetches the three packages without
# installing them. Debian 12's own runc and tini serve the new engine: trixie's runc needs
# glibc 2.38, which Debian 12 does not have.
#
# Usage: scripts/install-docker26.sh [PREFIX]   (default /opt/cachewarden/docker26)
set -euo pipefail

prefix="${1:-/opt/cachewarden/docker26}"
if [ -x "$prefix/usr/sbin/dockerd" ] && [ -x "$prefix/usr/bin/containerd" ] &&
    [ -x "$prefix/usr/bin/docker" ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive

policy="$(apt-cache policy docker.io)"
if ! grep -q ' 26\.' <<<"$policy"; then
    if ! [ -f /etc/apt/sources.list.d/cachewarden-trixie.sources ]; then
        cat >/etc/apt/sources.list.d/cachewarden-trixie.sources <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    fi
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' \
        >/etc/apt/preferences.d/cachewarden-trixie
    apt-get update
fi

# Debian 12's runc and tini run the containers of both engines.
missing=()
for p in runc tini; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

work="$(mktemp -d)"
chmod 755 "$work" # apt downloads as `_apt`
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download docker.io/trixie docker-cli/trixie containerd/trixie)
staging="$prefix.new"
rm -rf "$staging"
mkdir -p "$staging"
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$staging"
done
rm -rf "$prefix"
mv "$staging" "$prefix"
"$prefix/usr/sbin/dockerd" --version
"$prefix/usr/bin/containerd" --version
"$prefix/usr/bin/docker" --version
