#!/usr/bin/env bash
# Prepare, on a CPU machine with PyPI and the shared data, what the GPU machine (no network) needs and lacks:
# .gpu_carry/wheelhouse (setuptools, wheel, packaging to build `pip install -e .`; tqdm, pyyaml; all small) and
# .gpu_carry/data/cmu_small_region.png (CMU-1-Small-Region.svs as a PNG: no OpenSlide/imagecodecs needed to read it).
# .gpu_carry/ is gitignored and travels with the working tree when the device run names it in `carry`.
#   bash benchmarks/gpu_prep.sh
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.gpu_carry
rm -rf "$carry"
mkdir -p "$carry/wheelhouse" "$carry/data"
# the device has Python 3.12 with torch, triton, numba, scipy, pillow, tifffile, pyarrow, pytest: not downloaded
pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$carry/wheelhouse" \
    setuptools wheel packaging tqdm pyyaml
python benchmarks/gpu_check.py export-slide --out "$carry/data" >/dev/null
ls -l "$carry/wheelhouse" "$carry/data"
tree_mb=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carry_mb=$(du -sb "$carry" | cut -f1)
echo "travels: working tree $((tree_mb >> 20)) MiB + $carry $((carry_mb >> 20)) MiB (limit 64 MiB)"
