"""Writes tests/fixtures/conformance.tz: a small-width InceptionV3 (with the
auxiliary classifier, dropout off) in PyTorch, its initial state, one batch,
the logits, the loss, every parameter gradient, the state and momentum after
one SGD step, the loss and state of a second step taken from there and the
logits in inference (running statistics) from that state; and how
far PyTorch's own bf16 autocast moves the first step from float32 (the yardstick
of test_autocast) on AUTOCAST_BATCHES batches of 6 that the test makes again
from AUTOCAST_SEED with the project's own generator (lib/util.c's Rng): on one
batch the loss's distance is a sum of roundings that cancel by chance.
Run with Debian's python3-torch:
    /usr/bin/python3 tests/pytorch/make_fixture.py tests/fixtures/conformance.tz
"""
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

from inceptionv3 import InceptionV3, stream_end, stream_record

WIDTH, CLASSES, BATCH, STEPS = 0.125, 10, 6, 2
LR, MOMENTUM, WD, AUX_WEIGHT = 0.01, 0.9, 5e-4, 0.4
AUTOCAST_BATCHES, AUTOCAST_SEED = 64, 1
M64 = (1 << 64) - 1


def f32(t):
    t = t.detach()
    return t.float().numpy() if t.is_floating_point() else t.numpy()


def mix64(z):
    z = (z + 0x9e3779b97f4a7c15) & M64
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Rng:
    """lib/util.c's Rng (xoshiro256** seeded by splitmix64), bit for bit."""

    def __init__(self, seed, stream):
        x = mix64(seed) ^ mix64((stream * 0x632be59bd9b4e019 + 1) & M64)
        self.s = []
        for _ in range(4):
            x = mix64(x)
            self.s.append(x)

    def next(self):
        s = self.s
        result, t = (rotl((s[1] * 5) & M64, 7) * 9) & M64, (s[1] << 17) & M64
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
        s[2] ^= t; s[3] = rotl(s[3], 45)
        return result

    def below(self, n):
        lim = M64 - M64 % n
        while True:
            x = self.next()
            if x < lim:
                return x % n


def autocast_batch(rng):
    """One batch as test_autocast makes it: images uniform in [-1, 1) (as
    tests/unit/check.h's uniform_floats), then labels."""
    u = np.array([rng.next() >> 40 for _ in range(BATCH * 3 * 32 * 32)], dtype=np.float32)
    x = np.float32(2) * (u * np.float32(1 / 16777216)) - np.float32(1)
    y = [rng.below(CLASSES) for _ in range(BATCH)]
    return torch.from_numpy(x.reshape(BATCH, 3, 32, 32)), torch.tensor(y, dtype=torch.int64)


def autocast_distance(x, y):
    """The first step in float32 and under torch.autocast(bfloat16), from the same
    initial state: the largest logit difference relative to the largest logit,
    the loss's relative difference, and the median over parameters of the
    gradients' relative L2 difference."""
    runs = []
    for bf16 in (False, True):
        torch.manual_seed(0)
        model = InceptionV3(CLASSES, WIDTH, aux=True)
        model.dropout.p = 0.0
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, aux = model(x)
        loss = F.cross_entropy(logits.float(), y) + AUX_WEIGHT * F.cross_entropy(aux.float(), y)
        loss.backward()
        runs.append((logits.double().detach(), loss.item(), [p.grad.double() for p in model.parameters()]))
    (l32, loss32, g32), (l16, loss16, g16) = runs
    grads = sorted(((a - b).norm() / b.norm()).item() for a, b in zip(g16, g32))
    return np.array([((l16 - l32).abs().max() / l32.abs().max()).item(), abs(loss16 - loss32) / abs(loss32),
                     grads[len(grads) // 2]], dtype=np.float32)


def main(out):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = InceptionV3(CLASSES, WIDTH, aux=True)
    model.dropout.p = 0.0
    model.train()
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.randint(0, CLASSES, (BATCH,))
    # float64: PyTorch's own float32 gradients of this small, narrow model
    # differ from the exact ones by percents; the fixture holds exact values
    model.double()
    x64 = x.double()
    recs = [stream_record("config", np.array([CLASSES, BATCH, STEPS], dtype=np.int64)),
            stream_record("sgd", np.array([LR, MOMENTUM, WD], dtype=np.float32)),
            stream_record("width", np.array([WIDTH], dtype=np.float32)),
            stream_record("x", x.numpy()), stream_record("y", y.numpy())]
    recs += [stream_record("init." + k, f32(v)) for k, v in model.state_dict().items()]
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    losses = []
    for step in range(STEPS):
        opt.zero_grad()
        logits, aux = model(x64)
        loss = F.cross_entropy(logits, y) + AUX_WEIGHT * F.cross_entropy(aux, y)
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            recs += [stream_record("logits", f32(logits)),
                     stream_record("aux_logits", f32(aux)),
                     stream_record("loss", np.array([loss.item()], dtype=np.float32))]
            recs += [stream_record("grad." + k, f32(p.grad))
                     for k, p in model.named_parameters()]
        opt.step()
        prefix = "step%d." % (step + 1)
        recs += [stream_record(prefix + k, f32(v)) for k, v in model.state_dict().items()]
        if step == 0:
            recs += [stream_record(prefix + "momentum." + k, f32(opt.state[p]["momentum_buffer"]))
                     for k, p in model.named_parameters()]
    recs.append(stream_record("losses", np.array(losses, dtype=np.float32)))
    model.eval()
    with torch.no_grad():
        recs.append(stream_record("eval_logits", f32(model(x64))))
    rng = Rng(AUTOCAST_SEED, 0)
    batches = [autocast_batch(rng) for _ in range(AUTOCAST_BATCHES)]
    # the labels let the test confirm that it drew the same batches
    recs += [stream_record("autocast_seed", np.array([AUTOCAST_SEED], dtype=np.int64)),
             stream_record("autocast_y", torch.stack([b[1] for b in batches]).numpy()),
             stream_record("autocast_distance", np.stack([autocast_distance(a, b) for a, b in batches]))]
    data = b"".join(recs) + stream_end()
    subprocess.run(["zstd", "-q", "-19", "-f", "-o", out], input=data, check=True)


if __name__ == "__main__":
    main(sys.argv[1])
