"""Writes tests/fixtures/conformance.tz: a small-width InceptionV3 (with the
auxiliary classifier, dropout off) in PyTorch, its initial state, one batch,
the logits, the loss, every parameter gradient, the state and momentum after
one SGD step, the loss and state of a second step taken from there and the
logits in inference (running statistics) from that state; and how
far PyTorch's own bf16 autocast moves the first step from float32 (the yardstick
of test_autocast), on that batch and on AUTOCAST_BATCHES - 1 more: on one batch
of 6 the loss's distance is a sum of roundings that cancel by chance.
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
AUTOCAST_BATCHES = 8


def f32(t):
    t = t.detach()
    return t.float().numpy() if t.is_floating_point() else t.numpy()


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
    # the batches of the yardstick: the fixture's, then more from a generator of
    # their own (the records above stay as they were)
    g = torch.Generator().manual_seed(1)
    xs = [x] + [torch.randn(BATCH, 3, 32, 32, generator=g) for _ in range(AUTOCAST_BATCHES - 1)]
    ys = [y] + [torch.randint(0, CLASSES, (BATCH,), generator=g) for _ in range(AUTOCAST_BATCHES - 1)]
    recs += [stream_record("autocast_x", torch.stack(xs).numpy()),
             stream_record("autocast_y", torch.stack(ys).numpy()),
             stream_record("autocast_distance", np.stack([autocast_distance(a, b) for a, b in zip(xs, ys)]))]
    data = b"".join(recs) + stream_end()
    subprocess.run(["zstd", "-q", "-19", "-f", "-o", out], input=data, check=True)


if __name__ == "__main__":
    main(sys.argv[1])
