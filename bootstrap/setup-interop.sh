#!/usr/bin/env bash
# Prepare the Python side of Cairn's interop tests: a venv with py-libp2p 0.8.1.
#
#   bootstrap/setup-interop.sh          -> prints the venv's python path as the last stdout line
#
# Idempotent and quiet when everything is already in place. Environment:
#   CAIRN_PY_VENV   venv location (default: <repo>/.venv-interop)
#
# Needs: python3 >= 3.10 with venv, gcc + libgmp-dev (libp2p 0.8.1 builds fastecdsa from source).
set -euo pipefail

LIBP2P_VERSION="0.8.1"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
VENV="${CAIRN_PY_VENV:-$REPO_DIR/.venv-interop}"

log() { echo "setup-interop: $*" >&2; }

# --- 1. apt packages (only touch apt when something is missing) -------------------------
APT_PKGS=(python3-venv gcc libgmp-dev)
missing=()
for p in "${APT_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    log "installing apt packages: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- 2. pick a python able to create venvs (>= 3.10) -----------------------------------
py_ok() {
    "$1" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
        >/dev/null 2>&1
}
pick_python() {
    local c
    # Debian's python3 first (python3-venv above is for it), then whatever python3 is on PATH.
    for c in /usr/bin/python3 "$(command -v python3 || true)"; do
        if [ -n "$c" ] && [ -x "$c" ] && py_ok "$c"; then echo "$c"; return 0; fi
    done
    return 1
}

# --- 3. venv ---------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    PY="$(pick_python)" || { log "no python3 >= 3.10 with venv/ensurepip found"; exit 1; }
    log "creating venv $VENV with $PY"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" >&2
fi
VPY="$VENV/bin/python"

# --- 4. libp2p ---------------------------------------------------------------------------
installed_version() {
    "$VPY" - <<'PY' 2>/dev/null
import importlib.metadata as m
import libp2p  # noqa: F401  (must actually import, not only be registered)
print(m.version("libp2p"))
PY
}
have="$(installed_version || true)"
if [ "$have" != "$LIBP2P_VERSION" ]; then
    log "installing libp2p==$LIBP2P_VERSION into $VENV (had: ${have:-none}); takes ~30 s"
    "$VPY" -m pip install -q --disable-pip-version-check "libp2p==$LIBP2P_VERSION" >&2
    have="$(installed_version || true)"
    if [ "$have" != "$LIBP2P_VERSION" ]; then
        log "libp2p install failed (import gives version '${have:-none}')"
        exit 1
    fi
fi

echo "$VPY"
