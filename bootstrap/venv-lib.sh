# Shared by the interop setup scripts (setup-interop.sh, setup-p2pclient.sh, setup-kubo.sh):
# source it after defining `log`. Idempotent; touches apt only when something is missing.

# ensure_apt PKG...: installs the Debian packages that are not installed yet.
ensure_apt() {
    local missing=() p SUDO=""
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
    ((${#missing[@]})) || return 0
    log "installing apt packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# A python able to create venvs (>= 3.10): Debian's first (python3-venv is for it), then PATH's.
pick_python() {
    local c
    for c in /usr/bin/python3 "$(command -v python3 || true)"; do
        if [ -n "$c" ] && [ -x "$c" ] &&
            "$c" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

# ensure_venv DIR: makes DIR a working venv (re-created if broken); sets VPY to its python.
ensure_venv() {
    local venv="$1" py
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        py="$(pick_python)" || { log "no python3 >= 3.10 with venv/ensurepip found"; exit 1; }
        log "creating venv $venv with $py"
        rm -rf "$venv"
        "$py" -m venv "$venv" >&2
    fi
    VPY="$venv/bin/python"
}
