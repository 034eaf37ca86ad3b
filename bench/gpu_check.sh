#!/usr/bin/env bash
# The GPU checks in one command (issue 18); docs/BENCHMARKS.md, "GPU check", says how to run it
# on a lent device machine. Each part runs under its own `timeout`, inside one overall budget.
set -u -o pipefail

PARTS="install,gsplat,cuda-pose-tests,render-gl,pose,gl-tests,cuda-tests,render-cuda"

usage() {
    cat <<EOF
usage: bash bench/gpu_check.sh [--out DIR] [--quick] [--budget SECONDS] [--only PARTS]
                               [--python PY]

On a machine with an NVIDIA GPU: installs what it needs from .gpu/ (bench/gpu_prepare.sh fills
it on a machine with network; carry it to the device), builds gsplat's CUDA extension, runs
the CUDA tests, the renderer benchmark's GPU rows (GL through EGL and CUDA: 100k / 300k / 1M
Gaussians at 1920x1080 and stereo 2x2064x2208) and the torch poser's timing, and writes every
figure to DIR/gpu_check.json and the whole log to DIR/gpu_check.log. Without an NVIDIA GPU it
says so, runs the parts that can run at small sizes, and exits 0 when they pass.

  --out DIR        output folder (default: \$OUT when set, else out/gpu-check)
  --quick          small sizes and few frames: a smoke run (always so without a GPU)
  --budget S       seconds for the whole check (default 480); each part also has its own cap
  --only PARTS     comma-separated subset of: $PARTS
                   (the probe and install always run, gsplat with cuda-tests or render-cuda)
  --python PY      the Python to run (default: \$PYTHON, else .venv/bin/python where it runs,
                   else python3; on the device machines python3 is the one with torch)

Exit status: 0 every part that ran passed; 2 a part failed or ran out of time (the JSON and
the summary at the end say which); 1 bad options.
EOF
}

die() { echo "error: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTDIR=${OUT:-}
QUICK=0
BUDGET=480
ONLY=""
PY=${PYTHON:-}
ARGS=("$@")
while (($#)); do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --out) (($# >= 2)) || die "--out needs a folder"; OUTDIR=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --budget) (($# >= 2)) || die "--budget needs a number of seconds"; BUDGET=$2; shift 2 ;;
        --only) (($# >= 2)) || die "--only needs a comma-separated list of parts"; ONLY=$2
                shift 2 ;;
        --python) (($# >= 2)) || die "--python needs an interpreter"; PY=$2; shift 2 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ $BUDGET =~ ^[0-9]+$ ]] && ((BUDGET >= 60)) \
    || die "--budget must be a whole number of seconds, at least 60 (got '$BUDGET')"
if [[ -n $ONLY ]]; then
    IFS=, read -r -a wanted <<<"$ONLY"
    for part in "${wanted[@]}"; do
        [[ ",$PARTS," == *",$part,"* ]] || die "unknown part '$part' in --only; parts: $PARTS"
    done
fi
want() {  # the probe and install always run; the CUDA parts need gsplat built
    [[ -z $ONLY || ",$ONLY," == *",$1,"* || $1 == install ]] && return 0
    [[ $1 == gsplat && ( ",$ONLY," == *",cuda-tests,"* || ",$ONLY," == *",render-cuda,"* ) ]]
}

cd "$ROOT" || die "cannot enter $ROOT"
if [[ -z $PY ]]; then
    if [[ -x .venv/bin/python ]] && .venv/bin/python -c "" 2>/dev/null; then
        PY=$ROOT/.venv/bin/python
    else
        PY=python3
    fi
fi
"$PY" -c "import sys; assert sys.version_info >= (3, 10)" 2>/dev/null \
    || die "no usable Python 3.10+ at '$PY' (give one with --python)"
OUTDIR=${OUTDIR:-$ROOT/out/gpu-check}
[[ -e $OUTDIR && ! -d $OUTDIR ]] && die "--out $OUTDIR exists and is not a folder"
mkdir -p "$OUTDIR" 2>/dev/null || die "cannot make the output folder $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/gpu_check.log
JSON=$OUTDIR/gpu_check.json
: >"$LOG" 2>/dev/null || die "cannot write $LOG"

WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
SITE=/tmp/splatcall-gpu/site            # carried wheels installed here (a fresh one each run)
CACHE=/tmp/splatcall-gpu/cache          # a gsplat wheel built here stays for the next call
                                        # on the same warm machine
BUILD_PID=""
cleanup() {
    [[ -n $BUILD_PID ]] && kill "$BUILD_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export PYTHONUNBUFFERED=1
ORIGINAL_PYTHONPATH=${PYTHONPATH:-}
export PYTHONPATH="$ROOT${ORIGINAL_PYTHONPATH:+:$ORIGINAL_PYTHONPATH}"
export TORCH_EXTENSIONS_DIR=/tmp/splatcall-gpu/torch_extensions
DEADLINE=$((BUDGET - 20))              # the rest is the summary's
PHASE_END=$DEADLINE                    # lowered while the parts before the CUDA ones run
NPROC=$(nproc 2>/dev/null || echo 2)

say() { echo "$*" | tee -a "$LOG"; }
report() { "$PY" bench/gpu_check_report.py "$@"; }
record() {  # NAME STATUS RC SECONDS TIMEOUT NOTE [--while-build]
    report record --work "$WORK" --part "$1" --status "$2" ${3:+--rc "$3"} --seconds "$4" \
        --timeout "$5" --note "$6" ${7:+"$7"}
    report merge --work "$WORK" --out "$JSON" >/dev/null || say "warning: could not write $JSON"
}
build_running() { [[ -n $BUILD_PID ]] && kill -0 "$BUILD_PID" 2>/dev/null; }
# While the gsplat build holds most cores, foreground parts keep to the first four.
pin() { if build_running && ((NPROC >= 8)) && command -v taskset >/dev/null; then
            echo "taskset -c 0-3"; fi; }

run_part() {  # NAME CAP CMD...: CMD under its own timeout, capped by what the budget has left
    local name=$1 cap=$2
    shift 2
    local left=$((PHASE_END - SECONDS))
    if ((left < 15)); then
        say "== $name: skipped, no time left in the ${BUDGET} s budget"
        record "$name" skipped "" 0 0 "no time left in the ${BUDGET} s budget"
        return
    fi
    local t=$((cap < left ? cap : left)) during="" pinned
    build_running && during=--while-build
    pinned=$(pin)
    say "== $name (up to ${t} s of ${left} s left${during:+, beside the gsplat build}): $*"
    local start=$SECONDS
    # shellcheck disable=SC2086
    $pinned timeout -k 10 "$t" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]} took=$((SECONDS - start)) status note
    case $rc in
        0) status=ok note="" ;;
        124|137) status=timeout note="stopped after ${t} s" ;;
        *) status=failed note="exit status $rc" ;;
    esac
    say "-- $name: $status in ${took} s${note:+ ($note)}"
    record "$name" "$status" "$rc" "$took" "$t" "$note" $during
}

skip_part() {  # NAME REASON
    say "== $1: skipped: $2"
    record "$1" skipped "" 0 0 "$2"
}

# --- what this machine has ----------------------------------------------------------------
say "gpu_check: $(date -u +%FT%TZ) on $(hostname), ${NPROC} CPUs, budget ${BUDGET} s, output $OUTDIR"
GPU=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q "^GPU "; then
    GPU=1
    say "NVIDIA GPU present: $(nvidia-smi -L | head -n 4 | tr '\n' ' ')"
    # What install and gsplat put in $SITE; never on the path of a dry run (a left-over
    # $SITE from another run must not change what it finds).
    export PYTHONPATH="$ROOT:$SITE${ORIGINAL_PYTHONPATH:+:$ORIGINAL_PYTHONPATH}"
else
    say "NO NVIDIA GPU PRESENT on this machine ($(command -v nvidia-smi >/dev/null \
        && echo 'nvidia-smi lists none' || echo 'no nvidia-smi')): a dry run; the CUDA parts" \
        "record why they cannot run, the others run at small sizes"
    QUICK=1
fi
"$PY" - "$WORK/meta.json" "$BUDGET" "$QUICK" "$GPU" "$PY" "${ARGS[@]}" <<'EOF'
import datetime, json, shlex, sys
path, budget, quick, gpu, py, *args = sys.argv[1:]
json.dump({"command": shlex.join(["bash", "bench/gpu_check.sh", *args]),
           "started": datetime.datetime.now().isoformat(timespec="seconds"),
           "mode": "gpu" if gpu == "1" else "dry run: no NVIDIA GPU present",
           "budget_s": int(budget), "quick": quick == "1", "python": py}, open(path, "w"))
EOF
run_part probe 90 "$PY" bench/gpu_check_report.py probe --out "$WORK/probe.json"

if ((QUICK)); then
    COUNTS=(100k) SIZES=(512x512) REPEATS=2 POSE_REPEATS=10
else
    COUNTS=(100k 300k 1M) SIZES=(1920x1080 "stereo 2x2064x2208") REPEATS=5 POSE_REPEATS=30
fi
TORCH_DEVICE=cuda
((GPU)) || TORCH_DEVICE=cpu POSE_REPEATS=3

# --- install: carried wheels and the GL loaders -------------------------------------------
install_part() {
    local wheels=() f
    for f in .gpu/wheels/*.whl; do
        [[ -f $f && $(basename "$f") != gsplat-* ]] && wheels+=("$f")
    done
    rm -rf "$SITE" && mkdir -p "$SITE" || return 1
    if ((${#wheels[@]})); then
        echo "installing ${#wheels[@]} carried wheels into $SITE: ${wheels[*]##*/}"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "${wheels[@]}" || return 1
    fi
    if ! ldconfig -p | grep -q "libEGL.so.1 "; then
        local debs=(.gpu/debs/*.deb)
        if [[ -f ${debs[0]} && $(id -u) == 0 ]]; then
            echo "no libEGL.so.1 here: unpacking the carried GL loaders (${debs[*]##*/})"
            for f in "${debs[@]}"; do dpkg -x "$f" / || return 1; done
            ldconfig
        else
            echo "warning: no libEGL.so.1 and no carried GL loaders (.gpu/debs) or no root:" \
                "the GL parts will fail"
        fi
    fi
    "$PY" -c "import moderngl, numpy, torch; print('moderngl', moderngl.__version__, \
'numpy', numpy.__version__, 'torch', torch.__version__)"
}
export -f install_part
export PY SITE
if ((GPU)); then
    [[ -d .gpu ]] || say "warning: no .gpu folder here: run bash bench/gpu_prepare.sh on a" \
        "machine with network and carry .gpu"
    run_part install 90 bash -c install_part
    vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    if [[ -f $vendor ]] && ! grep -qsl nvidia /usr/share/glvnd/egl_vendor.d/*.json; then
        export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
        say "EGL vendor file: $vendor"
    fi
else
    found=$(ls .gpu/wheels .gpu/debs 2>/dev/null | grep -c -E '\.(whl|deb|tar\.gz)$')
    note="no NVIDIA GPU: nothing installed here (.gpu holds ${found} files for a device"
    [[ -d .gpu ]] || note+="; run bench/gpu_prepare.sh to fill it"
    skip_part install "$note)"
fi

# --- gsplat's CUDA extension, built in the background while the parts that need no gsplat run
gsplat_part() {
    local start=$SECONDS whl
    for whl in .gpu/wheels/gsplat-*-linux_x86_64.whl "$CACHE"/gsplat-*-linux_x86_64.whl; do
        [[ -f $whl ]] || continue
        echo "trying the compiled wheel $whl"
        if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$SITE" "$whl" && "$PY" -c "import gsplat.csrc"; then
            gsplat_json prebuilt "$whl" $((SECONDS - start))
            return 0
        fi
        echo "that wheel does not load here (another torch or CUDA?): building from source"
    done
    local sdist
    sdist=$(ls .gpu/wheels/gsplat-*.tar.gz 2>/dev/null | head -n 1)
    [[ -n $sdist ]] || { echo "no gsplat source in .gpu/wheels: run bench/gpu_prepare.sh"; \
                         return 1; }
    mkdir -p "$CACHE"
    echo "building $sdist for compute capability ${TORCH_CUDA_ARCH_LIST:-of the GPU seen}" \
        "with MAX_JOBS=$MAX_JOBS"
    "$PY" -m pip wheel -v --no-build-isolation --no-deps --no-index -w "$CACHE" "$sdist" \
        || return 1
    whl=$(ls -t "$CACHE"/gsplat-*-linux_x86_64.whl | head -n 1)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$whl" && "$PY" -c "import gsplat.csrc" || return 1
    gsplat_json built "$whl" $((SECONDS - start))
}
gsplat_json() {  # SOURCE WHEEL SECONDS
    "$PY" -c "import json, sys; json.dump({'source': sys.argv[1], 'wheel': sys.argv[2], \
'seconds': int(sys.argv[3]), 'arch': sys.argv[4], 'max_jobs': sys.argv[5]}, \
open(sys.argv[6], 'w'))" "$1" "${2##*/}" "$3" "${TORCH_CUDA_ARCH_LIST:-}" "$MAX_JOBS" \
        "$WORK/gsplat.json"
    echo "gsplat ready ($1, ${2##*/}) in $3 s"
}
export -f gsplat_part gsplat_json
export CACHE WORK

BUILD_START=0 BUILD_CAP=0
if ! want gsplat; then
    skip_part gsplat "not asked for (--only)"
elif ((!GPU)); then
    skip_part gsplat "no NVIDIA GPU: gsplat's CUDA extension is not built here"
else
    arch=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['torch']\
.get('capability', ''))" "$WORK/probe.json" 2>/dev/null)
    [[ -n $arch ]] && export TORCH_CUDA_ARCH_LIST=$arch
    left=$((DEADLINE - SECONDS))
    BUILD_CAP=$((left - 100 < 330 ? left - 100 : 330))
    pinned=""
    if ((NPROC >= 8)) && command -v taskset >/dev/null; then
        pinned="taskset -c 4-$((NPROC - 1))"
        export MAX_JOBS=$((NPROC - 4))
    else
        export MAX_JOBS=$NPROC
    fi
    if ((BUILD_CAP < 30)); then
        skip_part gsplat "no time left in the ${BUDGET} s budget"
    else
        say "== gsplat (up to ${BUILD_CAP} s, in the background; its log: gsplat-build.log)"
        BUILD_START=$SECONDS
        # shellcheck disable=SC2086
        $pinned timeout -k 10 "$BUILD_CAP" bash -c gsplat_part >"$WORK/gsplat-build.log" 2>&1 &
        BUILD_PID=$!
    fi
fi

wait_for_build() {
    [[ -n $BUILD_PID ]] || return 0
    local last=0
    while build_running; do
        if ((SECONDS - last >= 30)); then
            last=$SECONDS
            say "   gsplat build: $((SECONDS - BUILD_START)) s, last step:" \
                "$(grep -o '\[[0-9]*/[0-9]*\][^ ]* [^ ]*' "$WORK/gsplat-build.log" | tail -n 1)"
        fi
        sleep 2
    done
    wait "$BUILD_PID"
    local rc=$? took=$((SECONDS - BUILD_START)) status note=""
    BUILD_PID=""
    case $rc in
        0) status=ok note=$(tail -n 1 "$WORK/gsplat-build.log") ;;
        124|137) status=timeout note="build stopped after ${BUILD_CAP} s" ;;
        *) status=failed note="exit status $rc: $(grep -m 1 -i 'error' "$WORK/gsplat-build.log" \
               | cut -c 1-300)" ;;
    esac
    say "-- gsplat: $status in ${took} s ($note)"
    if [[ $status != ok ]]; then
        say "   the build log's last 40 lines:"
        tail -n 40 "$WORK/gsplat-build.log" | tee -a "$LOG"
        tail -n 3000 "$WORK/gsplat-build.log" >"$OUTDIR/gsplat-build.log"
    fi
    record gsplat "$status" "$rc" "$took" "$BUILD_CAP" "$note"
    local whl
    whl=$(ls -t "$CACHE"/gsplat-*-linux_x86_64.whl 2>/dev/null | head -n 1)
    if [[ $status == ok && -n $whl ]] && grep -q '"built"' "$WORK/gsplat.json"; then
        if (($(stat -c %s "$whl") <= 16 * 1024 * 1024)); then  # what one returned file may be
            cp "$whl" "$OUTDIR/" && say "   the compiled wheel is in the output folder: put" \
                "it in .gpu/wheels/ so that the next run skips the build"
        else
            say "   the compiled wheel, $(du -m "$whl" | cut -f1) MiB, is over the 16 MiB a" \
                "returned file may be: not copied to the output folder"
        fi
    fi
}

# --- the tests ----------------------------------------------------------------------------
# The parts before the build is waited for leave 100 s for the CUDA tests and rows.
if ((GPU)) && { want cuda-tests || want render-cuda; }; then
    PHASE_END=$((DEADLINE - 100))
fi
GPU_FILES=()
for f in tests/test_cuda_*.py $(grep -l "mark\.gpu" tests/test_*.py 2>/dev/null); do
    [[ $f == tests/test_cuda_pose.py || " ${GPU_FILES[*]} " == *" $f "* ]] || GPU_FILES+=("$f")
done
pytest_part() {  # NAME FILES...
    local name=$1
    shift
    run_part "$name" 150 "$PY" -m pytest -q -rs -p no:cacheprovider \
        --junitxml="$WORK/$name.xml" "$@"
}

if want cuda-pose-tests; then
    pytest_part cuda-pose-tests tests/test_cuda_pose.py
else
    skip_part cuda-pose-tests "not asked for (--only)"
fi

# --- the renderer benchmark: GL rows (GL through EGL: the NVIDIA driver on a device) --------
if want render-gl; then
    for count in "${COUNTS[@]}"; do
        run_part "render-gl-$count" 100 "$PY" bench/bench_render.py --repeats "$REPEATS" \
            --counts "$count" --sizes "${SIZES[@]}" --backends gl-gpupose gl --sort gpu \
            --no-cuda --no-reference --out "$WORK/render-gl-$count.json"
    done
else
    skip_part render-gl "not asked for (--only)"
fi

# --- the torch poser (render.cuda_pose) beside numpy's Avatar.pose -------------------------
if want pose; then
    ((GPU)) || say "   (no GPU: the torch poser is timed on the CPU device, to run its code)"
    run_part pose 90 "$PY" bench/bench_pose.py --repeats "$POSE_REPEATS" \
        --torch-device "$TORCH_DEVICE" --out "$WORK/pose.json"
else
    skip_part pose "not asked for (--only)"
fi

if ! want gl-tests; then
    skip_part gl-tests "not asked for (--only)"
elif ((GPU)); then
    pytest_part gl-tests tests/test_gl_render.py tests/test_gl_pose.py tests/test_gl_sort.py \
        tests/test_gl_backends.py
else
    skip_part gl-tests "no NVIDIA GPU: the GL tests run in the ordinary suite here (llvmpipe)"
fi

wait_for_build
PHASE_END=$DEADLINE

if want cuda-tests; then
    pytest_part cuda-tests "${GPU_FILES[@]}"
else
    skip_part cuda-tests "not asked for (--only)"
fi

# --- the renderer benchmark: CUDA rows (gsplat) --------------------------------------------
if want render-cuda; then
    for count in "${COUNTS[@]}"; do
        run_part "render-cuda-$count" 100 "$PY" bench/bench_render.py --repeats "$REPEATS" \
            --counts "$count" --sizes "${SIZES[@]}" --backends cuda-gpupose cuda \
            --no-reference --out "$WORK/render-cuda-$count.json"
    done
else
    skip_part render-cuda "not asked for (--only)"
fi

# --- one JSON, and a short table last (the device tool returns the end of the output) ------
"$PY" - "$WORK/meta.json" <<'EOF'
import datetime, json, sys
meta = json.load(open(sys.argv[1]))
meta["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
json.dump(meta, open(sys.argv[1], "w"))
EOF
report merge --work "$WORK" --out "$JSON" --print 2>&1 | tee -a "$LOG"
((GPU)) || say "NO NVIDIA GPU PRESENT: this was a dry run; the CUDA figures need a device machine"
say "gpu_check: done in ${SECONDS} s; log $LOG"
if grep -qE '"status": "(failed|timeout|error)"' "$WORK/parts.jsonl" 2>/dev/null; then
    exit 2
fi
exit 0
