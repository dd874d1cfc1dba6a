#!/usr/bin/env bash
# Installs what building Cairn needs on a fresh Debian machine (idempotent, quiet when done):
# libsodium (all cryptography), SQLite (peer store, through GRDB) and pkg-config.
# Swift itself (6.x) must be on PATH or in /opt/swift.
set -euo pipefail
log() { echo "setup: $*" >&2; }

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
command -v swift >/dev/null 2>&1 || { log "Swift 6 toolchain not found (PATH or /opt/swift)"; exit 1; }

APT_PKGS=(libsodium-dev libsecp256k1-dev libsqlite3-dev pkg-config nftables conntrack iproute2 coturn miniupnpd-nftables)
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing apt packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
