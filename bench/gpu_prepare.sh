#!/usr/bin/env bash
# Fills .gpu/ (ignored by git) with what bench/gpu_check.sh installs on a device machine, which
# has no network: carry .gpu with the call (docs/BENCHMARKS.md, "GPU check").
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash bench/gpu_prepare.sh [--dir DIR] [--python-version X.Y]

Run on a machine with network, in the repository root. Downloads into DIR (default .gpu):
  wheels/gsplat-VERSION.tar.gz   gsplat's source: gpu_check.sh builds its CUDA extension on the
                                 device (gsplat's PyPI wheel is pure Python and compiles the
                                 same sources at first use; building once, ahead, keeps that
                                 out of the timed parts and gives a wheel to carry next time)
  wheels/moderngl-*.whl, wheels/glcontext-*.whl
                                 the GL binding, for the device's Python (default 3.12); the
                                 device image has torch, numpy, safetensors, pytest and
                                 gsplat's other needs (jaxtyping, rich, ninja)
  debs/*.deb                     the GL loaders (glvnd's libEGL, libGL, libOpenGL, libGLX) from
                                 this machine's Debian, unpacked on the device only where it
                                 has no libEGL.so.1
A compiled gsplat wheel that a device run returned (gsplat-*-linux_x86_64.whl) can be put in
DIR/wheels by hand: gpu_check.sh then installs it instead of building.

  --dir DIR             where to put them (default .gpu; replaced whole when all succeeded)
  --python-version X.Y  the device's Python (default 3.12, as the device tool's KINDS.md
                        records)
Pinned: gsplat 1.5.3, moderngl 5.13.0, glcontext 3.1.0 (GSPLAT_VERSION, MODERNGL_VERSION,
GLCONTEXT_VERSION in the environment override them).
EOF
}

die() { echo "error: $*" >&2; exit 1; }

DIR=.gpu
PYVER=3.12
while (($#)); do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --dir) (($# >= 2)) || die "--dir needs a folder"; DIR=$2; shift 2 ;;
        --python-version) (($# >= 2)) || die "--python-version needs X.Y"; PYVER=$2; shift 2 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ $PYVER =~ ^3\.[0-9]+$ ]] || die "--python-version must look like 3.12 (got '$PYVER')"
GSPLAT=${GSPLAT_VERSION:-1.5.3}
MODERNGL=${MODERNGL_VERSION:-5.13.0}
GLCONTEXT=${GLCONTEXT_VERSION:-3.1.0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=python3
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
[[ -e $DIR && ! -d $DIR ]] && die "$DIR exists and is not a folder"

NEW=$(mktemp -d "${DIR%/}.partial.XXXXXX")
trap 'rm -rf "$NEW"' EXIT
mkdir -p "$NEW/wheels" "$NEW/debs"

echo "[1/3] gsplat $GSPLAT source (sdist)"
# BUILD_NO_CUDA: pip reads the package's metadata by running its setup.py; without it that
# would try to set up the CUDA build here.
BUILD_NO_CUDA=1 "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
    -d "$NEW/wheels" "gsplat==$GSPLAT" || die "could not download gsplat $GSPLAT's source"

echo "[2/3] moderngl $MODERNGL and glcontext $GLCONTEXT for CPython $PYVER on x86-64 Linux"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${platforms[@]}" -d "$NEW/wheels" \
    "moderngl==$MODERNGL" "glcontext==$GLCONTEXT" || die "could not download the GL wheels"

echo "[3/3] GL loaders (Debian packages, amd64)"
if command -v apt-get >/dev/null; then
    lists=$(mktemp -d)
    mkdir -p "$lists/lists/partial" "$lists/cache/archives/partial"
    apt_opts=(-q -oAPT::Sandbox::User=root -oAPT::Architecture=amd64 -oAPT::Architectures=amd64
              "-oDir::State::Lists=$lists/lists" "-oDir::Cache=$lists/cache")
    if apt-get "${apt_opts[@]}" update >/dev/null \
        && (cd "$NEW/debs" && apt-get "${apt_opts[@]}" download libegl1 libglvnd0 libopengl0 \
            libgl1 libglx0 >/dev/null 2>&1); then
        :
    else
        echo "warning: apt-get could not fetch the GL loaders; the device run unpacks them only" \
            "where it lacks libEGL.so.1"
    fi
    rm -rf "$lists"
else
    echo "warning: no apt-get here: no GL loaders in $DIR/debs"
fi

# A compiled gsplat wheel put in by hand (returned by a device run) is kept.
if [[ -d $DIR/wheels ]]; then
    for f in "$DIR"/wheels/gsplat-*-linux_x86_64.whl; do
        [[ -f $f ]] && cp "$f" "$NEW/wheels/" && echo "kept the compiled ${f##*/}"
    done
fi
(cd "$NEW" && find . -type f ! -name MANIFEST.txt -printf '%P\n' | sort | xargs sha256sum \
    >MANIFEST.txt)
rm -rf "$DIR"
mv "$NEW" "$DIR"
trap - EXIT
chmod 755 "$DIR"
echo "$DIR:"
(cd "$DIR" && find . -type f -printf '  %P  %s bytes\n' | sort)
size=$(du -sm "$DIR" | cut -f1)
echo "$size MiB in all; carry it with the device call: carry=[\"$DIR\"] (the working tree and" \
    "the carried paths together may be 64 MiB)"
