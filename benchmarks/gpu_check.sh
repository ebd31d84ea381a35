#!/usr/bin/env bash
# GPU acceptance run for the lent H200 machine (no network), self-contained; one JSON: OUT_DIR/gpu_check.json.
#   on a CPU machine, once:   bash benchmarks/gpu_prep.sh                   (fills .gpu_carry/, gitignored)
#   on the GPU machine:       bash benchmarks/gpu_check.sh OUT_DIR          (device run with carry [".gpu_carry"])
#   CPU rehearsal:            bash benchmarks/gpu_check.sh OUT_DIR --rehearsal
# Steps, each under `timeout` and inside a 450 s budget: install (venv over the machine's torch, --no-deps, offline
# from the wheelhouse), machine, native (CMake builds csrc/ from source: the CPU and CUDA libraries, and the TensorRT
# plugin when TensorRT_ROOT is set), tests (compiled Triton, native CUDA, CUDA decode/predict), kernels (Triton and
# native vs torch reference), models (torch fp32/fp16/bf16/compile tiles/s), e2e (`muse-fast bench --device cuda`,
# batch 16/64/256, on a 4x4 mosaic of the carried slide), parity (CPU vs GPU nuclei), collect. Without a GPU every
# step runs its CPU stand-in.
set -uo pipefail
out="${1:?usage: gpu_check.sh OUT_DIR [--rehearsal]}"
cd "$(dirname "$0")/.."
root=$PWD
carry=$root/.gpu_carry
png=$carry/data/cmu_small_region.png
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=$(mktemp -d)
log=$out/gpu_check.log
: >"$log"
budget=${MUSE_GPU_CHECK_BUDGET:-450}
mode=gpu
has_cuda='import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'
if [ "${2:-}" = "--rehearsal" ] || ! python3 -c "$has_cuda" 2>/dev/null; then mode=rehearsal; fi
rehearsal=()
[ "$mode" = rehearsal ] && rehearsal=(--rehearsal)
export PYTHONUNBUFFERED=1 MUSE_FAST_CACHE=$work/cache MUSE_GPU_CHECK_IMAGE=$png
export TRITON_INTERPRET=$([ "$mode" = gpu ] && echo 0 || echo 1)

step() {  # step NAME CAP_SECONDS COMMAND...: run under timeout, never past the budget; exit code in $work/NAME.rc
    local name=$1 cap=$2 left
    shift 2
    left=$((budget - SECONDS - 20))
    if [ "$left" -lt 10 ]; then
        echo "== $name: not run, budget spent" | tee -a "$log"
        return
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    echo "== $name (limit ${cap}s, t=${SECONDS}s)" | tee -a "$log"
    timeout --kill-after=5 "$cap" "$@" >>"$log" 2>&1
    echo $? >"$work/$name.rc"
    echo "   $name: exit $(cat "$work/$name.rc") at t=${SECONDS}s" | tee -a "$log"
}

if [ ! -d "$carry/wheelhouse" ] || [ ! -f "$png" ]; then
    echo "missing $carry: run 'bash benchmarks/gpu_prep.sh' on a CPU machine and carry .gpu_carry" | tee -a "$log"
    exit 2
fi
venv=$work/venv
py=$venv/bin/python
install() {  # a venv over the machine's packages (its torch stays); without venv support, the machine's python
    local wheels=(--no-index --find-links "$carry/wheelhouse" --no-deps) extra=()
    if ! timeout 60 python3 -m venv --system-site-packages "$venv"; then
        echo "no venv support: installing into the machine's python"
        py=python3
        extra=(--break-system-packages)
    fi
    timeout 60 "$py" -m pip install -q "${wheels[@]}" "${extra[@]}" tqdm pyyaml || return 1
    timeout 60 "$py" -m pip install -q "${wheels[@]}" "${extra[@]}" -e "$root" || return 1
    # slide readers, TensorRT and triton must stay lazy: the device has no OpenSlide, tiffslide, cuCIM, imagecodecs
    timeout 60 "$py" -c 'import sys, muse_fast.cli, muse_fast.runtime.bench, muse_fast.runtime.pipeline
bad = {"openslide", "tiffslide", "cucim", "imagecodecs", "tensorrt", "triton"} & set(sys.modules)
assert not bad, f"imported at import time: {bad}"'
}
echo "== install (t=${SECONDS}s)" | tee -a "$log"
install >>"$log" 2>&1
echo $? >"$work/install.rc"
echo "   install: exit $(cat "$work/install.rc") at t=${SECONDS}s" | tee -a "$log"
[ -x "$py" ] || py=python3
cli=$(dirname "$py")/muse-fast
[ -x "$cli" ] || cli=muse-fast
gc=("$py" benchmarks/gpu_check.py)

step machine 30 "${gc[@]}" machine --out "$work/machine.json" "${rehearsal[@]}"
# nothing prebuilt travels: the GPU machine has cmake and nvcc; tests and kernels find the libraries through this
export MUSE_NATIVE_BUILD=$work/native-build
step native 150 bash -c 'cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release ${3:+-DTensorRT_ROOT=$3} \
    && cmake --build "$2" -j "$(nproc)"' _ "$root" "$MUSE_NATIVE_BUILD" "${TensorRT_ROOT:-}"
timeout_flag=()
"$py" -c "import pytest_timeout" 2>/dev/null && timeout_flag=(--timeout=90)
step tests 150 "$py" -m pytest -q -p no:cacheprovider -o addopts="" -rs "${timeout_flag[@]}" \
    tests/kernels/test_cuda.py tests/runtime/test_cuda_predict.py tests/runtime/test_device_decode.py \
    tests/kernels/test_kernel_edges.py tests/kernels/test_native_cuda.py tests/kernels/test_native.py \
    --junitxml="$out/gpu_tests.xml"
[ -f "$out/gpu_tests.xml" ] && "${gc[@]}" junit --xml "$out/gpu_tests.xml" --out "$work/tests.json" >/dev/null
step kernels 60 "${gc[@]}" kernels --out "$work/kernels.json" "${rehearsal[@]}"
slide=$png
if [ "$mode" = gpu ]; then
    slide=$work/cmu_mosaic_4x4.tif
    step mosaic 40 "${gc[@]}" mosaic --png "$png" --out "$slide" --repeat 4
fi
step e2e 150 "${gc[@]}" e2e --png "$slide" --cli "$cli" --per-run 60 --out "$work/e2e.json" "${rehearsal[@]}"
step parity 90 "${gc[@]}" parity --png "$png" --out "$work/parity.json" "${rehearsal[@]}"
step models 120 "${gc[@]}" models --out "$work/models.json" "${rehearsal[@]}"
"${gc[@]}" collect --work "$work" --out "$out/gpu_check.json" >/dev/null
echo "wrote $out/gpu_check.json in ${SECONDS}s ($mode)" | tee -a "$log"
"$py" -c "import json, sys; r = json.load(open(sys.argv[1])); print(json.dumps(r['verdict']))" "$out/gpu_check.json"
