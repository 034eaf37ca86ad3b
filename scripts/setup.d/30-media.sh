#!/usr/bin/env bash
# Shared test media (real photographs and video made by nobody here), fetched once into
# .cache/media/ (git-ignored) from package registries, extracting only the files needed:
#   messi5.jpg, basketball1.png   Debian opencv-doc (BSD-3 licensed OpenCV samples)
#   jwpIntro.mp4                   PyPI psychopy 2026.2.5 wheel (GPL-3+; the man filmed is its author)
# Idempotent: a file already present is never fetched again. Runs in run and test mode
# (the demo uses the clip too). Tests find these through tests/media.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
MEDIA=.cache/media
mkdir -p "$MEDIA"
log() { echo "[setup:media] $*" >&2; }

PY=.venv/bin/python
[ -x "$PY" ] || PY=python3

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# -- opencv-doc sample images -------------------------------------------------------------------
need_deb=()
for f in messi5.jpg basketball1.png; do
    [ -s "$MEDIA/$f" ] || need_deb+=("$f")
done
if [ ${#need_deb[@]} -gt 0 ]; then
    log "fetching ${need_deb[*]} from Debian opencv-doc"
    (cd "$work" && { apt-get download opencv-doc >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get download opencv-doc >/dev/null; }; })
    deb=$(ls "$work"/opencv-doc_*.deb)
    for f in "${need_deb[@]}"; do
        dpkg-deb --fsys-tarfile "$deb" \
            | tar -xO "./usr/share/doc/opencv-doc/examples/data/$f" > "$work/$f"
        [ -s "$work/$f" ] || { log "opencv-doc has no $f"; exit 1; }
        mv "$work/$f" "$MEDIA/$f"   # rename last: a crash never leaves a half file
    done
fi

# -- psychopy's talking-head clip ------------------------------------------------------------------
if [ ! -s "$MEDIA/jwpIntro.mp4" ]; then
    log "fetching jwpIntro.mp4 from the psychopy 2026.2.5 wheel (PyPI)"
    "$PY" -m pip download -q --no-deps --dest "$work" "psychopy==2026.2.5"
    "$PY" - "$work" "$MEDIA" <<'PYEOF'
import sys, zipfile, pathlib
work, media = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("psychopy-*.whl"))
with zipfile.ZipFile(wheel) as z:
    data = z.read("psychopy/demos/coder/stimuli/jwpIntro.mp4")
tmp = media / "jwpIntro.mp4.part"
tmp.write_bytes(data)
tmp.replace(media / "jwpIntro.mp4")
PYEOF
fi
log "media ready in $MEDIA"
