#!/bin/bash
# python 3.11, torch 2.13.0+cpu; run from anywhere; logs beside this file
here=$(cd "$(dirname "$0")" && pwd)
for i in 1 2 3 4 5 6; do
  (cd /tmp/s29/old && PYTHONPATH=/tmp/s29/old python benchmarks/amx_standin.py /tmp/brca/brca_m2c_mosaic.tif --rounds 2 --modes burn,free) > "$here/old_$i.log" 2>&1
  (cd /tmp/s29/new && PYTHONPATH=/tmp/s29/new python benchmarks/amx_standin.py /tmp/brca/brca_m2c_mosaic.tif --rounds 2 --modes burn,free) > "$here/new_$i.log" 2>&1
done
