#!/usr/bin/env bash
# A real OpenXR runtime for the headset tests: Debian trixie's Monado in a debootstrap'd root
# (.cache/xr-root, git-ignored; this host's Debian is too old for Monado), with a Python 3.13
# venv (/opt/venv) holding the viewer's few dependencies. tests/test_xr_monado.py copies the
# project's sources in, mounts /proc (and nothing else), starts monado-service with the null
# compositor (headless, CPU: lavapipe + llvmpipe) and runs `python -m app.xr_view` inside.
#
# Test mode only, root only (debootstrap, chroot). Cached: rebuilt only when this script
# changes (its hash is the stamp); built under a temporary name and renamed when complete, so
# an interrupted build is never mistaken for a finished one. About 1.5 minutes, 1.1 GB.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/../.."
log() { echo "[setup:xr] $*" >&2; }

[ "${SETUP_MODE:-run}" = test ] || exit 0
if [ "$(id -u)" != 0 ]; then
    log "skipped: building the Monado root needs root (debootstrap, chroot); the XR runtime tests will skip"
    exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
    log "skipped: the Monado root is built for x86_64 only; the XR runtime tests will skip"
    exit 0
fi

ROOT=.cache/xr-root
WHEELS=.cache/xr-wheels
SUITE=trixie
MIRROR=http://deb.debian.org/debian
# Inside the root: the runtime, the loader, software Vulkan (Monado's compositor) and OpenGL
# (the client, EGL surfaceless or GLX), Python; the X client libraries let the GLX test talk
# to an Xvfb on the host through X's abstract socket (nothing but /proc is mounted).
PACKAGES=monado-service,libopenxr1-monado,libopenxr-loader1,mesa-vulkan-drivers,libgl1-mesa-dri,libegl1,libgl1,libglx-mesa0,python3-venv,libx11-6,libx11-xcb1,libxrandr2,libxinerama1,libxcursor1,libxi6,libxext6
# The client's Python packages (cp313 wheels fetched here with pip, installed offline there:
# pip inside the root may not trust this host's certificates).
WHEEL_SPECS=("pyopenxr==1.1.6501" "moderngl==5.13.0" "numpy>=2.1,<3" "safetensors>=0.4")

stamp=$(sha256sum "$SELF" | cut -c1-16)
if [ "$(cat "$ROOT/.splatcall-xr" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi

command -v debootstrap >/dev/null || { log "debootstrap is missing (scripts/apt/test-xr.txt)"; exit 1; }
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3

build=$ROOT.partial
unmount_proc() {
    for dir in "$build" "$ROOT"; do
        if mountpoint -q "$dir/proc" 2>/dev/null; then umount "$dir/proc" || umount -l "$dir/proc"; fi
    done
}
trap unmount_proc EXIT
unmount_proc
if mountpoint -q "$build/proc" 2>/dev/null; then log "$build/proc is still mounted"; exit 1; fi
rm -rf "$build"
mkdir -p .cache

log "building a Debian $SUITE root with Monado in $ROOT (about 1.5 minutes)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$build" "$MIRROR" >"$build.log" 2>&1 \
    || { log "debootstrap failed; the end of its log:"; tail -20 "$build.log" >&2; exit 1; }
rm -f "$build.log"

log "fetching the client's wheels for Python 3.13"
mkdir -p "$WHEELS"
"$PY" -m pip download -q --dest "$WHEELS" --python-version 3.13 \
    --only-binary=:all: "${WHEEL_SPECS[@]}"
mkdir -p "$build/opt/wheels"
cp "$WHEELS"/*.whl "$build/opt/wheels/"

mount -t proc proc "$build/proc"
chroot "$build" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root /bin/sh -c \
    "python3 -m venv /opt/venv && /opt/venv/bin/pip install -q --no-index --find-links /opt/wheels $(printf "'%s' " "${WHEEL_SPECS[@]}")"
chroot "$build" /opt/venv/bin/python -c "import xr, moderngl, numpy, safetensors" \
    || { log "the client's packages do not import inside the root"; exit 1; }
umount "$build/proc"
rm -rf "$build/opt/wheels" "$build/var/cache/apt/archives"/*.deb

echo "$stamp" > "$build/.splatcall-xr"
unmount_proc
if mountpoint -q "$ROOT/proc" 2>/dev/null; then log "$ROOT/proc is still mounted; not replacing it"; exit 1; fi
rm -rf "$ROOT"
mv "$build" "$ROOT"
log "Monado root ready in $ROOT"
