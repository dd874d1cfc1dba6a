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

# --- 1-3. apt, a python, the venv ---------------------------------------------------
source "$SCRIPT_DIR/venv-lib.sh"
ensure_apt python3-venv gcc libgmp-dev
ensure_venv "$VENV"

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
