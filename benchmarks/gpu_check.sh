#!/usr/bin/env bash
# GPU acceptance run for the lent H100/H200 machine (no network), self-contained; one JSON: OUT_DIR/gpu_check.json.
#   on a CPU machine, once:   bash benchmarks/gpu_prep.sh                   (fills .gpu_carry/, gitignored)
#   on the GPU machine:       bash benchmarks/gpu_check.sh OUT_DIR          (device run with carry [".gpu_carry"])
#   CPU rehearsal:            bash benchmarks/gpu_rehearsal.sh              (this script, --rehearsal, device layout)
# Steps, each under `timeout` and inside a 450 s budget, cheapest and most wanted first: install (this package into
# the `python3` that holds torch, --no-deps, offline from the wheelhouse), machine, native (CMake builds csrc/ from
# source for sm_90; fails without libmuse_native_cuda.so on a GPU), kernels (Triton and native against the vectorised
# torch baseline and the reference), mosaic, e2e (`python -m muse_fast bench --device cuda`, batch 16/64/256, on a
# 4x4 mosaic of the carried slide), models (torch fp32/fp16/bf16/compile tiles/s), parity (CPU vs GPU nuclei), and
# last the test files (compiled Triton, native CUDA, CUDA decode/predict; stopped with SIGINT at the budget, so the
# JUnit XML of the tests run so far survives). Without a GPU every step runs its CPU stand-in.
set -uo pipefail
out="${1:?usage: gpu_check.sh OUT_DIR [--rehearsal]}"
cd "$(dirname "$0")/.."
root=$PWD
carry=$root/.gpu_carry
png=$carry/data/cmu_small_region.png
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$out/gpu_check.log
: >"$log"
budget=${MUSE_GPU_CHECK_BUDGET:-450}
tests_reserve=60 # seconds kept for the test files, which run last
mode=gpu
has_cuda='import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'
if [ "${2:-}" = "--rehearsal" ] || ! python3 -c "$has_cuda" 2>/dev/null; then mode=rehearsal; fi
export PYTHONUNBUFFERED=1 MUSE_FAST_CACHE=$work/cache MUSE_GPU_CHECK_IMAGE=$png
export TRITON_INTERPRET=$([ "$mode" = gpu ] && echo 0 || echo 1)

step() { # step NAME CAP_SECONDS COMMAND...: under timeout, never past the budget; exit code in $work/NAME.rc
    local name=$1 cap=$2 left signal=${STEP_SIGNAL:-TERM}
    shift 2
    left=$((budget - SECONDS - 20 - ${STEP_RESERVE:-$tests_reserve}))
    if [ "$left" -lt 10 ]; then
        echo "== $name: not run, budget spent" | tee -a "$log"
        return
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    echo "== $name (limit ${cap}s, t=${SECONDS}s)" | tee -a "$log"
    timeout --signal="$signal" --kill-after=15 "$cap" "$@" >>"$log" 2>&1
    echo $? >"$work/$name.rc"
    echo "   $name: exit $(cat "$work/$name.rc") at t=${SECONDS}s" | tee -a "$log"
}

if [ ! -d "$carry/wheelhouse" ] || [ ! -f "$png" ]; then
    echo "missing $carry: run 'bash benchmarks/gpu_prep.sh' on a CPU machine and carry .gpu_carry" | tee -a "$log"
    exit 2
fi
py=python3
wheels=(--no-index --find-links "$carry/wheelhouse" --no-deps)
pip_install() { timeout 120 "$py" -m pip install -q "${wheels[@]}" "$@"; }
bridge() { # a venv whose site-packages join python3's (a .pth): for a python3 whose own environment is read-only
    python3 -m venv --without-pip "$work/venv" || return 1
    local site
    site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
    py=$work/venv/bin/python
    # one `import` line: python3's site dirs added as site dirs, so the .pth files in them are read too
    python3 -c 'import site; print("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in site.getsitepackages()))' \
        >"$site/machine_packages.pth"
}
install() { # into the python3 that holds torch: on the device, python3 is itself a venv (torch lives there)
    local module
    echo "python3: $(command -v python3)"
    if ! python3 -c 'import torch'; then
        echo "install: $(command -v python3) cannot import torch; run on the machine's python that holds torch"
        return 1
    fi
    # a venv (sys.prefix != sys.base_prefix) is installed into directly: a venv made from it with
    # --system-site-packages would see its base interpreter's packages, not its torch. A system interpreter gets a
    # venv over its packages (PEP 668); without venv support, --break-system-packages.
    if ! python3 -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        if timeout 60 python3 -m venv --system-site-packages "$work/venv"; then
            py=$work/venv/bin/python
        else
            echo "no venv support: installing into the machine's python"
            wheels+=(--break-system-packages)
        fi
    fi
    # MUSE_GPU_CHECK_BRIDGE=1 (a test seam) takes the bridge as if python3's environment were read-only
    if [ "${MUSE_GPU_CHECK_BRIDGE:-0}" = 1 ] || ! pip_install -e "$root"; then
        [ "$py" = python3 ] || return 1
        echo "cannot install into python3's environment: a venv bridged over it (its packages joined by a .pth)"
        if ! bridge || ! pip_install -e "$root"; then
            py=python3 # the steps then fail one by one, and collect still writes the JSON
            return 1
        fi
    fi
    echo "installed into: $("$py" -c 'import sys; print(sys.prefix)')"
    for module in tqdm:tqdm yaml:pyyaml; do # both are on the device: a wheel that does not fit is only a note
        "$py" -c "import ${module%%:*}" 2>/dev/null && continue
        pip_install "${module#*:}" ||
            echo "note: ${module#*:} not installed from the wheelhouse (muse-fast imports it only for YAML configs)"
    done
    # slide readers, TensorRT and triton must stay lazy: the device has no OpenSlide, tiffslide, cuCIM, imagecodecs
    timeout 60 "$py" -c 'import sys, torch, muse_fast.cli, muse_fast.runtime.bench, muse_fast.runtime.pipeline
bad = {"openslide", "tiffslide", "cucim", "imagecodecs", "tensorrt", "triton"} & set(sys.modules)
assert not bad, f"imported at import time: {bad}"
print("torch", torch.__version__, "from", torch.__file__)
print("muse_fast from", sys.modules["muse_fast"].__file__)'
}
echo "== install (t=${SECONDS}s, $mode)" | tee -a "$log"
install >>"$log" 2>&1
echo $? >"$work/install.rc"
echo "   install: exit $(cat "$work/install.rc") at t=${SECONDS}s" | tee -a "$log"
gc=("$py" benchmarks/gpu_check.py)

step machine 30 "${gc[@]}" machine --out "$work/machine.json" --mode "$mode"
# nothing prebuilt travels: the GPU machine has cmake and nvcc; tests and kernels find the libraries through this
export MUSE_NATIVE_BUILD=$work/native-build
step native 120 bash -c 'cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    ${3:+-DTensorRT_ROOT=$3} && cmake --build "$2" -j "$(nproc)"; "${@:4}"' _ "$root" "$MUSE_NATIVE_BUILD" \
    "${TensorRT_ROOT:-}" "${gc[@]}" native --build "$MUSE_NATIVE_BUILD" --out "$work/native.json" --mode "$mode"
step kernels 60 "${gc[@]}" kernels --out "$work/kernels.json" --mode "$mode"
size=(--repeat 4)
[ "$mode" = rehearsal ] && size=(--repeat 1 --crop 0.5) # the TIFF path on a quarter of the slide
step mosaic 40 "${gc[@]}" mosaic --png "$png" --out "$work/mosaic.tif" "${size[@]}" # + mosaic.json
mosaic=$work/mosaic.tif
[ -f "$mosaic" ] || mosaic=$png
step e2e 150 "${gc[@]}" e2e --png "$mosaic" --per-run "$([ "$mode" = gpu ] && echo 60 || echo 140)" \
    --out "$work/e2e.json" --mode "$mode"
step models 120 "${gc[@]}" models --out "$work/models.json" --mode "$mode"
step parity 90 "${gc[@]}" parity --png "$png" --out "$work/parity.json" --mode "$mode"
flags=()
"$py" -c "import pytest_timeout" 2>/dev/null && flags=(--timeout=90)
# rehearsal: CI runs these files in full; the CPU-only model runs among them are left out here to keep it short
[ "$mode" = rehearsal ] && flags+=(-k "not overlapped_pipeline and not predict_image_device_path and not fp64_bound")
STEP_SIGNAL=INT STEP_RESERVE=0 step tests 600 "$py" -m pytest -q -p no:cacheprovider -o addopts="" -rs \
    "${flags[@]}" --junitxml="$out/gpu_tests.xml" \
    tests/kernels/test_cuda.py tests/runtime/test_cuda_predict.py tests/runtime/test_device_decode.py \
    tests/kernels/test_kernel_edges.py tests/kernels/test_native_cuda.py tests/kernels/test_native.py
[ -f "$out/gpu_tests.xml" ] && "${gc[@]}" junit --xml "$out/gpu_tests.xml" --out "$work/tests.json" >/dev/null
"${gc[@]}" collect --work "$work" --out "$out/gpu_check.json" --mode "$mode" >/dev/null ||
    python3 benchmarks/gpu_check.py collect --work "$work" --out "$out/gpu_check.json" --mode "$mode" >/dev/null
echo "wrote $out/gpu_check.json in ${SECONDS}s ($mode)" | tee -a "$log"
"$py" -c "import json, sys; r = json.load(open(sys.argv[1])); print(json.dumps(r['verdict']))" "$out/gpu_check.json"
