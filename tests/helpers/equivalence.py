"""equivalence.py REF CAND NOISE... [--ratio R] [--floor T]

Is checkpoint CAND the same computation as checkpoint REF, to rounding?

"Rounding" is measured, not assumed: each NOISE checkpoint is REF's own run again
with only the order of its sums changed (another thread count, another set of
OpenBLAS kernels). This network at initialisation amplifies rounding by orders of
magnitude (tests/unit/test_conformance.c), by how much depends on the kernels, so a
fixed tolerance holds on one machine and fails on the next.

Compared per tensor, as relative L2 differences against REF: every float tensor
(parameters, their momentum - the sum of the gradients so far - and BN running
statistics) must stay within R times the noise of that tensor, or of the median
tensor of its kind if that is larger (a tensor can be bitwise stable under one
reordering by chance), or within T (float rounding of the arithmetic itself, such
as averaging the workers' running statistics); integer tensors (num_batches_tracked)
and the step must be equal. Prints the worst tensor and its ratio; exits 1 when CAND
is not within bounds.
"""
import sys

import numpy as np

import streams


def load(path):
    out = {}
    for name, dtype, dims, _, payload in streams.parse(streams.decompressed(path)):
        if dtype:
            out[name] = np.frombuffer(payload, streams.DT[dtype]).reshape(dims)
    return out


def rel(a, b):
    return np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30)


def main():
    args, ratio, floor_tol = [], 4.0, 1e-5
    it = iter(sys.argv[1:])
    for a in it:
        if a == "--ratio":
            ratio = float(next(it))
        elif a == "--floor":
            floor_tol = float(next(it))
        else:
            args.append(a)
    ref, cand, noise = load(args[0]), load(args[1]), [load(p) for p in args[2:]]
    if set(ref) != set(cand):
        print("the checkpoints hold different tensors")
        sys.exit(1)
    exact = [k for k in ref if ref[k].dtype != np.float32]
    for k in exact:
        if not np.array_equal(ref[k], cand[k]):
            print("%s differs (must be equal)" % k)
            sys.exit(1)
    worst = 0.0
    for kind, is_kind in (("learned", lambda k: "running_" not in k), ("running statistics", lambda k: "running_" in k)):
        keys = [k for k in ref if ref[k].dtype == np.float32 and is_kind(k)]
        noise_of = {k: max(rel(n[k], ref[k]) for n in noise) for k in keys}
        median = float(np.median(list(noise_of.values())))
        ratios = {k: 0.0 if rel(cand[k], ref[k]) <= floor_tol else
                  rel(cand[k], ref[k]) / max(noise_of[k], median, 1e-30) for k in keys}
        which = max(ratios, key=ratios.get)
        if ratios[which]:
            print("%s: noise median %.2g, worst %s at %.2f x its noise (bound %g)"
                  % (kind, median, which, ratios[which], ratio))
        else:
            print("%s: noise median %.2g, every tensor within %g" % (kind, median, floor_tol))
        worst = max(worst, ratios[which])
    sys.exit(0 if worst <= ratio else 1)


if __name__ == "__main__":
    main()
