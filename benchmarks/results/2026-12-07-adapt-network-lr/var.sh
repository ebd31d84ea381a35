#!/bin/bash
# VARIANTS="tag:key=val,key=val ..." on three adapt-full proxies
cd "$(dirname "$0")/../../.."  # the repository root
O=/tmp/exp/bn; mkdir -p $O
run() { # name mpp inputs ann scoreset overrides...
  local n=$1 mpp=$2 inp=$3 ann=$4 set=$5; shift 5
  /usr/bin/time -f "%e s wall %U s user" python benchmarks/results/2026-12-07-adapt-network-lr/run_full.py $O/$n.pt $mpp $inp $ann "$@" > $O/$n.out 2> $O/$n.time
  python benchmarks/adapt_measure.py score $O/$n.pt $set > $O/$n.score.json 2> $O/$n.err
}
for v in $VARIANTS; do
  tag=${v%%:*}; ov=$(echo ${v#*:} | tr "," " ")
  run shiftn_$tag 0.5 /tmp/shiftn/train.inputs /tmp/shiftn/regions shifted:/tmp/shiftn $ov
  run nucls_$tag 0.25 /tmp/ad3/nucls_regions.inputs /tmp/ad3/nucls_regions nucls $ov
  run s7_$tag 0.5 /tmp/shift2_s7/train.inputs /tmp/shift2_s7/regions shifted:/tmp/shift2_s7 $ov
done
echo done > "$O/DONE.${1:-all}"
