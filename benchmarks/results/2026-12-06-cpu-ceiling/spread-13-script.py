import sys, time, statistics, json, os
import numpy as np, torch
from muse_fast.model.weights import load_weights
from muse_fast.runtime.compiled import TileNet
from muse_fast.runtime.memory import keep_large_buffers
from muse_fast.runtime.autotune import calibration_batch
mode, path = sys.argv[1], sys.argv[2]
keep_large_buffers()
if mode == "build":
    model, meta = load_weights()
    net = TileNet(model.eval(), True).eval()
    ex = torch.zeros((16, 224, 224, 3), dtype=torch.uint8)
    t = time.perf_counter()
    with torch.no_grad():
        ep = torch.export.export(net, (ex,))
        torch._inductor.aoti_compile_and_package(ep, package_path=path, inductor_configs={"freezing": True, "aot_inductor.package_constants_in_so": False, "aot_inductor.package_constants_on_disk_format": "binary_blob"})
    print("built", time.perf_counter() - t)
else:
    batch = torch.from_numpy(calibration_batch(16, 224))
    out = []
    kept = []
    for i in range(int(sys.argv[3]) if len(sys.argv) > 3 else 4):
        r = torch._inductor.aoti_load_package(path)
        kept.append(r)
        r(batch)
        ts = []
        for _ in range(8):
            t = time.perf_counter(); r(batch); ts.append(time.perf_counter() - t)
        out.append(round(16 / statistics.median(ts), 1))
    ref = kept[0](batch)
    np.savez(path + ".out.npz", centre=ref[0].numpy(), fmap=ref[1].numpy())
    print(json.dumps({"path": path, "per_load": out}))
