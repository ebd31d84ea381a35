#!/usr/bin/env bash
# The compiled engine on the CPU, measured as docs/results.md reports it:
#   1. model-only tiles/s of torch fp32, torch bf16, compiled bf16, ONNX Runtime fp32 and --engine auto, in one
#      process, interleaved rounds (benchmarks/compare_engines.py);
#   2. per slide, twice, alternating: `muse-fast bench` with the compiled engine and with eager torch bf16 (end to end
#      as infer runs it, model-only, stage breakdown, s/mm^2 of tissue), then `muse-fast infer` with its default
#      engine (auto), whose last line gives the run's s/mm^2 of tissue.
# Usage: nice -n 10 bash benchmarks/compiled_cpu.sh [OUT_DIR]   (data: $MUSE_DATA, else ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/$(date -u +%F)-compiled-cpu}
data=${MUSE_DATA:-../shared/data}
mkdir -p "$out"
{ date -u +%FT%TZ; git rev-parse --short HEAD; uptime; } > "$out/context.txt"
python3 benchmarks/compare_engines.py torch:fp32 torch:bf16 compiled:bf16 onnx:fp32 auto --rounds 9 \
    > "$out/model-only.json"
for slide in "$data/wsi/CMU-1-Small-Region.svs" "$data/wsi/OS-1-detail.ome.tif"; do
    stem=$(basename "$slide")
    stem=${stem%%.*}
    for round in 1 2; do
        for engine in compiled torch; do
            muse-fast bench "$slide" --engine "$engine" > "$out/bench-$stem-$engine-$round.json"
        done
    done
    infer_out=$(mktemp -d)
    muse-fast infer "$slide" --out "$infer_out" 2> "$out/infer-$stem.log"
    rm -rf "$infer_out"
done
uptime >> "$out/context.txt"
