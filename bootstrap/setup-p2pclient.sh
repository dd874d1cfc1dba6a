#!/usr/bin/env bash
# The Python side of the daemon-API tests: a venv with p2pclient 0.3.0 (the maintained client of
# the libp2p daemon control protocol), apart from py-libp2p's venv (their pins differ).
#
#   bootstrap/setup-p2pclient.sh        -> prints the venv's python path as the last stdout line
#
# Idempotent and quiet when in place. CAIRN_P2PCLIENT_VENV: venv location (default <repo>/.venv-p2pclient).
set -euo pipefail
P2PCLIENT_VERSION="0.3.0"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CAIRN_P2PCLIENT_VENV:-$REPO_DIR/.venv-p2pclient}"
log() { echo "setup-p2pclient: $*" >&2; }

source "$(dirname "${BASH_SOURCE[0]}")/venv-lib.sh"
ensure_apt python3-venv
ensure_venv "$VENV"
have="$("$VPY" -c 'import importlib.metadata as m, p2pclient; print(m.version("p2pclient"))' 2>/dev/null || true)"
if [ "$have" != "$P2PCLIENT_VERSION" ]; then
    log "installing p2pclient==$P2PCLIENT_VERSION into $VENV (had: ${have:-none})"
    "$VPY" -m pip install -q --disable-pip-version-check "p2pclient==$P2PCLIENT_VERSION" >&2
    have="$("$VPY" -c 'import importlib.metadata as m, p2pclient; print(m.version("p2pclient"))' 2>/dev/null || true)"
    [ "$have" = "$P2PCLIENT_VERSION" ] || { log "p2pclient install failed (got '${have:-none}')"; exit 1; }
fi
echo "$VPY"
