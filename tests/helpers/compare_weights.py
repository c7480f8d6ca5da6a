"""compare_weights.py A.safetensors B.safetensors [--skip PREFIX]... [--tol T]
Prints the largest relative L2 difference over tensors (and which); exits 1 when
it exceeds T (default 0: bitwise equal). BN num_batches_tracked must be equal."""
import json
import struct
import sys

import numpy as np


def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dt = np.float32 if v["dtype"] == "F32" else np.int64
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dt).reshape(v["shape"])
    return out


def main():
    args = sys.argv[1:]
    a, b = load(args[0]), load(args[1])
    skip = [args[i + 1] for i, x in enumerate(args) if x == "--skip"]
    tol = float(args[args.index("--tol") + 1]) if "--tol" in args else 0.0
    keys = [k for k in a if not any(k.startswith(s) for s in skip)]
    missing = [k for k in keys if k not in b or a[k].shape != b[k].shape]
    if missing:
        print("differ in shape or presence:", missing[:5])
        sys.exit(1)
    worst, which = 0.0, ""
    for k in keys:
        if a[k].dtype == np.int64:
            if not (a[k] == b[k]).all():
                print("integer tensor differs:", k)
                sys.exit(1)
            continue
        d = np.linalg.norm(a[k].astype(np.float64) - b[k]) / max(np.linalg.norm(b[k].astype(np.float64)), 1e-12)
        if d > worst:
            worst, which = d, k
    print("%d tensors, largest relative difference %.3g %s" % (len(keys), worst, which))
    sys.exit(0 if worst <= tol else 1)


if __name__ == "__main__":
    main()
