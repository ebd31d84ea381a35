#!/usr/bin/env bash
# GPU check: run the CUDA tests and the benchmarks on a machine with a GPU, write JSON results into folder $1.
#   bash benchmarks/gpu_check.sh OUT_DIR
set -uo pipefail
out="${1:?usage: gpu_check.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
python3 - "$out/machine.json" <<'PY'
import json, platform, subprocess, sys, datetime
import torch
info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": None}
try:
    import triton; info["triton"] = triton.__version__
except ImportError:
    info["triton"] = None
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name(0)
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    q = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    info["driver"] = subprocess.run(q, capture_output=True, text=True).stdout.strip()
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
PY
python3 -m pytest -q tests/kernels/test_cuda.py 2>&1 | tee "$out/gpu_tests.txt"
tests_rc=${PIPESTATUS[0]}
python3 -m pytest -q benchmarks/test_bench_kernels.py --benchmark-only --benchmark-json="$out/bench_kernels.json" \
    2>&1 | tail -30 | tee "$out/bench_kernels.txt"
# model-only throughput per engine (torch on CUDA; onnx and trt where their GPU builds are installed, else skipped)
python3 -m pytest -q benchmarks/test_bench_end_to_end.py -k model_only --benchmark-only \
    --benchmark-json="$out/bench_engines.json" 2>&1 | tail -10 | tee "$out/bench_engines.txt"
python3 -m pytest -q tests/export -rs 2>&1 | tail -10 | tee "$out/export_tests.txt"
echo "gpu tests exit code: $tests_rc"
exit "$tests_rc"
