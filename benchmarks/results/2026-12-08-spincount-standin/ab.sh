cd /work/main
for i in 1 2 3 4 5; do
  for p in default 10000 100000; do
    if [ $p = default ]; then unset GOMP_SPINCOUNT; else export GOMP_SPINCOUNT=$p; fi
    python benchmarks/amx_standin.py /tmp/brca/brca_m2c_mosaic.tif --rounds 3 --modes burn,free 2>/dev/null | grep '^{"mode"' | sed "s/^/$p /" >> /tmp/ab2/log
  done
done
echo done >> /tmp/ab2/log
