"""Writes tests/fixtures/recipe.tz: what PyTorch computes for the training recipe's
options outside the network, for tests/unit/test_recipe.c: cross_entropy with
label_smoothing (loss and d(logits)), with class labels and with probability
targets (MixUp, CutMix), and SGD with Nesterov momentum and weight
decay over three steps. Run with Debian's python3-torch:
    /usr/bin/python3 tests/pytorch/make_recipe_fixture.py tests/fixtures/recipe.tz
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

from inceptionv3 import stream_end, stream_record

N, K, P = 16, 10, 257
SMOOTHING = (0.0, 0.1, 0.2)
LR, MOMENTUM, WD, STEPS = 0.05, 0.9, 5e-4, 3


def xent_records(prefix, logits, target):
    """loss.PREFIXs and dlogits.PREFIXs of cross_entropy(logits, target) at each smoothing s"""
    out = []
    for s in SMOOTHING:
        z = logits.clone().requires_grad_(True)
        loss = F.cross_entropy(z, target, label_smoothing=s)
        loss.backward()
        tag = prefix + "%g" % s
        out += [stream_record("loss." + tag, np.array([loss.item()], np.float32)),
                stream_record("dlogits." + tag, z.grad.numpy())]
    return out


def main(path):
    g = torch.Generator().manual_seed(0)
    out = []
    logits = torch.randn(N, K, generator=g) * 3
    labels = torch.randint(0, K, (N,), generator=g)
    out += [stream_record("logits", logits.numpy()), stream_record("labels", labels.numpy())]
    out += xent_records("", logits, labels)
    w = torch.randn(P, generator=g).requires_grad_(True)
    grads = [torch.randn(P, generator=g) for _ in range(STEPS)]
    out.append(stream_record("sgd.w0", w.detach().numpy().copy()))
    opt = torch.optim.SGD([w], lr=LR, momentum=MOMENTUM, weight_decay=WD, nesterov=True)
    for k, gk in enumerate(grads):
        w.grad = gk.clone()
        opt.step()
        out += [stream_record("sgd.g%d" % k, gk.numpy()),
                stream_record("sgd.w%d" % (k + 1), w.detach().numpy().copy())]
    out.append(stream_record("sgd.hyper", np.array([LR, MOMENTUM, WD], np.float32)))
    # probability targets, as MixUp and CutMix make them (drawn last: the records
    # above keep their values)
    soft = torch.softmax(torch.randn(N, K, generator=g) * 2, dim=1)
    out.append(stream_record("soft", soft.numpy()))
    out += xent_records("soft.", logits, soft)
    with open(path, "wb") as f:
        f.write(b"".join(out) + stream_end())


if __name__ == "__main__":
    main(sys.argv[1])
