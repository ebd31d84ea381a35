#!/usr/bin/env bash
# Prepare, on a CPU machine with PyPI, what the GPU machine (no network, no .git) needs and lacks:
# .gpu_carry/wheelhouse (setuptools, wheel, packaging to build `pip install -e .`; tqdm, pyyaml in case the device
# lacks them; all small), .gpu_carry/data/cmu_small_region.png (CMU-1-Small-Region.svs as a PNG: no
# OpenSlide/imagecodecs needed to read it; from ../shared/data or the README demo's copy) and .gpu_carry/commit.json
# (the commit the run is of). .gpu_carry/ is gitignored and travels when the device run names it in `carry`.
#   bash benchmarks/gpu_prep.sh
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.gpu_carry
limit=$((64 << 20))
rm -rf "$carry"
mkdir -p "$carry/wheelhouse" "$carry/data"
# the device has Python 3.12 with torch, triton, numba, scipy, pillow, tifffile, pyarrow, pytest: not downloaded
pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$carry/wheelhouse" \
    setuptools wheel packaging tqdm pyyaml
python3 benchmarks/gpu_check.py export-slide --out "$carry/data" >/dev/null
dirty=false
git diff --quiet HEAD -- || dirty=true
printf '{"commit": "%s", "dirty": %s, "changed_files": %d, "prepared_utc": "%s"}\n' "$(git rev-parse HEAD)" "$dirty" \
    "$(git status --porcelain --untracked-files=no | wc -l)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$carry/commit.json"
ls -l "$carry/wheelhouse" "$carry/data" "$carry/commit.json"
tree_bytes=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carry_bytes=$(du -sb "$carry" | cut -f1)
echo "travels: working tree $((tree_bytes >> 20)) MiB + $carry $((carry_bytes >> 20)) MiB ($carry_bytes bytes; limit 64 MiB)"
if [ "$carry_bytes" -ge "$limit" ]; then
    echo "gpu_prep: $carry is $carry_bytes bytes, over the 64 MiB carry limit; shrink what it holds" >&2
    exit 1
fi
