"""A study, not a benchmark: whether a bf16 Winograd convolution keeps the error of
a direct bf16 one. Its answer (no: 4 to 13 times the error at the tiles in use) is
why lib/gemm.c keeps the Winograd GEMMs in fp32 under autocast (bf16_kind).

A bf16 GEMM takes its inputs rounded to bf16 and accumulates in fp32. A direct
convolution so rounds the input and the kernel; Winograd's F(m, r) rounds their
transforms, V = B'd and U = Gg, and its output A'(U . V) then sums terms far
larger than itself, so the rounding grows with the tile. This measures both on
the same data against the exact (float64) convolution along a line: relative
RMS error over many tiles, for the tiles lib/winograd.c uses (built the same
way: Toom-Cook over 0, +-1, +-2, +-1/2, then 4, -1/4, and infinity) and for
smaller ones. Products and sums are exact here: fp32 accumulation adds about
1e-7, against bf16's 2e-3. Inputs are those of a unit's convolution: ReLU
outputs (half of them zero) and kernels as PyTorch initialises them.
    python3 studies/winograd-bf16.py [CHANNELS [TILES]]"""
import sys

import numpy as np

POINTS = [0, 1, -1, 2, -2, 0.5, -0.5, 4, -0.25]
KERNELS = 16          # output channels: each one's rounding is shared by all its tiles


def bf16(x):
    """x rounded to bf16 (nearest even), as float64."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def poly_from_roots(roots, skip):
    """Coefficients, lowest power first, of the product of (x - a) over roots but skip."""
    coef = np.array([1.0])
    for k, a in enumerate(roots):
        if k != skip:
            coef = np.convolve(coef, [-a, 1.0])
    return coef


def toom_cook(m, r):
    """B', G, A' of F(m, r) over the first m + r - 2 POINTS and infinity."""
    alpha = m + r - 1
    finite = POINTS[:alpha - 1]
    bt, g, at = np.zeros((alpha, alpha)), np.zeros((alpha, r)), np.zeros((m, alpha))
    for j, a in enumerate(finite):
        fj = np.prod([a - b for b in finite if b != a])
        g[j] = [a ** k / fj for k in range(r)]
        c = poly_from_roots(finite, j)
        bt[j, :len(c)] = c
        at[:, j] = [a ** i for i in range(m)]
    c = poly_from_roots(finite, -1)
    bt[alpha - 1, :len(c)] = c
    g[alpha - 1, r - 1] = 1
    at[m - 1, alpha - 1] = 1
    return bt, g, at


def errors(m, r, channels, tiles, rng):
    bt, g_t, at = toom_cook(m, r)
    alpha = m + r - 1
    d = np.maximum(rng.standard_normal((channels, tiles, alpha)), 0)
    bound = 1 / np.sqrt(channels * r)
    g = rng.uniform(-bound, bound, (KERNELS, channels, r))

    def direct(gg, dd):
        return np.stack([np.einsum('ock,ctk->ot', gg, dd[:, :, i:i + r]) for i in range(m)], axis=-1)

    def winograd(uu, vv):
        return np.einsum('ij,ojt->oti', at, np.einsum('ojc,jct->ojt', uu, vv))

    exact = direct(g, d)
    v = np.einsum('ja,cta->jct', bt, d)
    u = np.einsum('jk,ock->ojc', g_t, g)
    assert np.allclose(winograd(u, v), exact, atol=1e-9 * np.abs(exact).max())
    by_winograd = winograd(bf16(u), bf16(v))
    scale = np.sqrt(np.mean(exact ** 2))

    def rms(y):
        return np.sqrt(np.mean((y - exact) ** 2)) / scale

    return rms(direct(bf16(g), bf16(d))), rms(by_winograd)


def main(channels, tiles):
    rng = np.random.default_rng(0)
    print(f"bf16 Winograd against a direct bf16 convolution: relative RMS error, {channels} channels in, "
          f"{KERNELS} out, {tiles} tiles")
    print(f"{'tile':9} {'in use':8} {'GEMM MACs/output':>16} {'direct bf16':>12} {'Winograd bf16':>14} {'ratio':>6}")
    in_use = {(6, 3), (4, 5), (4, 7)}
    for m, r in [(6, 3), (4, 3), (2, 3), (4, 5), (2, 5), (4, 7), (2, 7)]:
        direct, winograd = errors(m, r, channels, tiles, rng)
        print(f"F({m}, {r})  {'yes' if (m, r) in in_use else '':8} {(m + r - 1) / m:9.2f} of {r:<4} "
              f"{direct:12.2e} {winograd:14.2e} {winograd / direct:6.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256, int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
