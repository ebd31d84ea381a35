#!/bin/bash
for i in 1 2 3; do
  for side in old new; do
    if [ $side = old ]; then dir=/tmp/wt_old; else dir=/work/main; fi
    (cd $dir && PYTHONPATH=$dir python /work/main/benchmarks/amx_standin.py /tmp/brca/brca_m2c_mosaic.tif --rounds 3 --modes burn,free 2>/dev/null | tail -1 | sed "s/^/$side $i /") >> /tmp/ab3.log
  done
done
echo done >> /tmp/ab3.log
