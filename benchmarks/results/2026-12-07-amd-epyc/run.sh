#!/usr/bin/env bash
# docs/results.md, "A CPU without AMX": model only, then end to end on the mosaic and CMU-1-Small-Region
set -euxo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
O=benchmarks/results/2026-12-07-amd-epyc
{ date -u +%FT%TZ; git rev-parse --short HEAD; uptime; grep -m1 "model name" /proc/cpuinfo; } > $O/context.txt
test -f /tmp/brca/brca_m2c_mosaic.tif || python benchmarks/brca_mosaic.py /tmp/brca/brca_m2c_mosaic.tif
python benchmarks/compare_engines.py torch:fp32 torch:bf16 compiled:fp32 compiled:bf16 onnx:fp32 auto --rounds 5 > $O/model-only.json
for r in 1 2; do
  for e in auto torch; do muse-fast bench /tmp/brca/brca_m2c_mosaic.tif --engine $e > $O/bench-mosaic-$e-$r.json; done
done
for r in 1 2; do muse-fast bench ../shared/data/wsi/CMU-1-Small-Region.svs --engine auto > $O/bench-CMU-1-Small-Region-auto-$r.json; done
uptime >> $O/context.txt

