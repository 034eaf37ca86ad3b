#!/usr/bin/env bash
# Sets up everything this project needs on a fresh machine, and nothing twice:
#   1. Debian packages listed in scripts/apt/*.txt (installed when run as root, else the
#      exact apt-get command is printed),
#   2. a virtual environment in .venv with the project and its Python dependencies,
#   3. the steps in scripts/setup.d/*.sh (test media, the OpenXR runtime root, ...).
# Usage: scripts/setup.sh [run|test]   ("test" adds the test tools and the avatar-creation extra)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
export SETUP_MODE=$MODE

log() { echo "[setup] $*" >&2; }

# -- 1. system packages ---------------------------------------------------------------------
wanted=$(cat scripts/apt/common.txt $( [ "$MODE" = test ] && ls scripts/apt/test-*.txt 2>/dev/null ) \
         | sed 's/#.*//' | tr -s ' \n' '\n' | sed '/^$/d' | sort -u)
missing=()
for p in $wanted; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        log "missing Debian packages; run: sudo apt-get install ${missing[*]}"
        exit 1
    fi
fi

# -- 2. Python environment ------------------------------------------------------------------
# 3.11 first: it is the version with the most prebuilt wheels here (torch's CPU wheel among them).
# A candidate must really run: a pyenv shim can exist for a version that is not selected.
PY=""
for candidate in python3.11 python3.12 python3; do
    if "$candidate" -c 'import sys, venv; assert (3, 11) <= sys.version_info[:2] <= (3, 12)' 2>/dev/null; then
        PY=$candidate; break
    fi
done
[ -n "$PY" ] || { log "Python 3.11 or 3.12 is needed (mediapipe 0.10.21 has no wheel for 3.13)"; exit 1; }
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $PY"
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$MODE
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python packages (first run: a few minutes)"
    .venv/bin/python -m pip install -q --upgrade pip
    if [ "$MODE" = test ]; then
        # The CPU build of torch is enough for the template rebuild test; pinning it keeps pip
        # from pulling a multi-GB CUDA build where a local wheel exists.
        .venv/bin/python -m pip install -q "torch==2.13.0"
        .venv/bin/python -m pip install -q -e ".[dev,create,scan]"
    else
        # The create extra too: the set-up makes the demo talker's own avatar with it
        # (scripts/setup.d/60-demo-avatar.sh).
        .venv/bin/python -m pip install -q "torch==2.13.0"
        .venv/bin/python -m pip install -q -e ".[create]"
    fi
    echo "$want" > "$stamp"
fi

# -- 3. further steps -----------------------------------------------------------------------
for step in scripts/setup.d/*.sh; do
    [ -e "$step" ] || continue
    bash "$step"
done
log "ready"
