#!/usr/bin/env bash
# Rehearse the GPU acceptance run on a CPU machine, in the device's layout, so that the one device attempt passes:
#   1. benchmarks/gpu_prep.sh fills .gpu_carry (needs PyPI); its size is checked against the 64 MiB carry limit;
#   2. the device's tree: a copy of the working tree (tracked and untracked files, not the ignored ones: no .git, no
#      build/) plus .gpu_carry, in a temporary folder beside no ../shared/data;
#   3. the device's Python: `python3` is a venv interpreter that holds torch while its base interpreter does not
#      (a venv from a torch-less interpreter of the same version, e.g. /usr/bin/python3, with this python's packages
#      joined by a .pth; without one, a --system-site-packages venv, said as "approximate"); no nvidia-smi on PATH;
#   4. benchmarks/gpu_check.sh --rehearsal run there with no network (`unshare -n`; where namespaces are refused,
#      only pip's --no-index keeps the install offline, and the script says so), then the JSON is validated.
# Exits 0 only when every step ran and finished and the report is complete.
#   bash benchmarks/gpu_rehearsal.sh [OUT_DIR]        (default: out/gpu_rehearsal; the base python can be set with
#                                                      MUSE_REHEARSAL_BASE_PYTHON)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${1:-$root/out/gpu_rehearsal}
mkdir -p "$out" && out=$(cd "$out" && pwd)
sandbox=$(mktemp -d "${TMPDIR:-/tmp}/muse_gpu_rehearsal.XXXXXX")
trap 'rm -rf "$sandbox"' EXIT
fail() {
    echo "gpu_rehearsal: $*" >&2
    exit 1
}

echo "== 1/4 gpu_prep.sh (t=${SECONDS}s)"
bash benchmarks/gpu_prep.sh
carry_bytes=$(du -sb .gpu_carry | cut -f1)
echo "carry: .gpu_carry is $carry_bytes bytes ($((carry_bytes >> 20)) MiB; limit 64 MiB)"
[ "$carry_bytes" -lt $((64 << 20)) ] || fail ".gpu_carry is over the 64 MiB carry limit"

echo "== 2/4 the device's tree (t=${SECONDS}s)"
repo=$sandbox/repo
mkdir -p "$repo"
while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done < <(git ls-files -co --exclude-standard -z) |
    tar --null -T - -cf - | tar -xf - -C "$repo"
cp -r .gpu_carry "$repo/"
echo "copied $(du -sh "$repo" | cut -f1) to $repo (no .git, no build/)"

echo "== 3/4 the device's python (t=${SECONDS}s)"
host=$(python3 -c 'import sys; print(sys.executable)')
version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
base=${MUSE_REHEARSAL_BASE_PYTHON:-/usr/bin/python3}
venv=$sandbox/device-venv
"$host" -c 'import torch' || fail "$host cannot import torch: install it first (README)"
if [ -x "$base" ] && [ "$(version "$base")" = "$(version "$host")" ] && ! "$base" -c 'import torch' 2>/dev/null &&
    "$base" -m venv --without-pip "$venv" 2>/dev/null; then # pip comes with the joined packages
    venv_site=$("$venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # every package folder the host imports from (a host that is itself a venv over a system python included)
    "$host" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' |
        awk '!seen[$0]++' >"$venv_site/device_packages.pth"
    # what broke the earlier script: a venv made from the device's python sees its base's packages, not torch
    "$venv/bin/python3" -m venv --system-site-packages --without-pip "$sandbox/nested"
    if "$sandbox/nested/bin/python3" -c 'import torch' 2>/dev/null; then
        fail "layout check: a venv nested in $venv sees torch; the device's layout is not reproduced"
    fi
    layout="faithful: torch is in $venv only, its base $base lacks it (a venv nested in it cannot import torch)"
else
    rm -rf "$venv"
    "$host" -m venv --system-site-packages "$venv"
    layout="approximate: no torch-less $(version "$host") interpreter at $base, so the venv's base holds torch too"
fi
"$venv/bin/python3" -c 'import torch' || fail "$venv/bin/python3 cannot import torch"
echo "python3 = $venv/bin/python3; layout $layout"
path=$venv/bin
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do # no nvidia-smi, no pyenv shims: only the venv's python3
    [ -n "$d" ] && [ ! -x "$d/nvidia-smi" ] && [[ "$d" != *pyenv/shims* ]] && path=$path:$d
done
env PATH="$path" bash -c '! command -v nvidia-smi' >/dev/null || fail "nvidia-smi is still on PATH"
netns=()
if unshare -n true 2>/dev/null; then
    netns=(unshare -n)
    offline="unshare -n: no network at all"
elif unshare -rn true 2>/dev/null; then
    netns=(unshare -rn)
    offline="unshare -rn: no network at all"
else
    offline="NOTE: network namespaces are refused here; only pip --no-index keeps the install offline"
fi
echo "offline: $offline"

echo "== 4/4 gpu_check.sh --rehearsal (t=${SECONDS}s)"
rc=0
"${netns[@]}" env -u MUSE_DATA -u MUSE_NATIVE_BUILD -u TRITON_INTERPRET -u VIRTUAL_ENV -u PYTHONPATH \
    PATH="$path" TMPDIR="$sandbox" PIP_NO_INDEX=1 bash "$repo/benchmarks/gpu_check.sh" "$out" --rehearsal || rc=$?
[ "$rc" -eq 0 ] || fail "gpu_check.sh exited $rc; see $out/gpu_check.log"
"$venv/bin/python3" "$repo/benchmarks/gpu_check.py" validate --report "$out/gpu_check.json" ||
    fail "the report is incomplete; see $out/gpu_check.json and $out/gpu_check.log"
echo "rehearsal passed in ${SECONDS}s: layout $layout; offline: $offline; carry $((carry_bytes >> 20)) MiB"
