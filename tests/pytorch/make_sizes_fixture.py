"""Writes tests/fixtures/sizes.tz: the conformance fixture's model (its initial state
and batch, from tests/fixtures/conformance.tz; without the auxiliary classifier, whose
last kernel is the size of 32x32 inputs; float64) over images of other sizes, as
progressive resizing trains it: for 24x24 and 20x28 crops of the batch and the batch
zero-padded to 36x40 (larger images: every buffer follows the size), a training
step's logits, loss and every parameter gradient, and the logits in inference, for
tests/unit/test_sizes.c. Run with Debian's python3-torch:
    /usr/bin/python3 tests/pytorch/make_sizes_fixture.py tests/fixtures/conformance.tz tests/fixtures/sizes.tz
"""
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

from inceptionv3 import InceptionV3, stream_end, stream_record
from make_taps_fixture import read_stream

SIZES = [(24, 24), (20, 28), (36, 40)]


def main(src, out):
    r = read_stream(src)
    classes = int(r["config"][0])
    state = {k[5:]: torch.from_numpy(v.copy()).double() if v.dtype == np.float32 else torch.from_numpy(v.copy())
             for k, v in r.items() if k.startswith("init.") and not k.startswith("init.AuxLogits.")}
    y = torch.from_numpy(r["y"].copy())
    recs = [stream_record("sizes", np.array(SIZES, dtype=np.int64))]
    for h, w in SIZES:
        x = torch.from_numpy(r["x"].copy()).double()
        x = F.pad(x, (0, max(w - 32, 0), 0, max(h - 32, 0)))[:, :, :h, :w]
        tag = "%dx%d" % (h, w)
        model = InceptionV3(classes, float(r["width"][0]), aux=False).double()
        model.dropout.p = 0.0
        model.load_state_dict(state, strict=True)
        model.train()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        recs += [stream_record("x." + tag, x.float().numpy()),
                 stream_record("logits." + tag, logits.detach().float().numpy()),
                 stream_record("loss." + tag, np.array([loss.item()], dtype=np.float32))]
        recs += [stream_record("grad.%s.%s" % (tag, k), p.grad.float().numpy()) for k, p in model.named_parameters()]
        model.load_state_dict(state, strict=True)      # inference from the initial statistics
        model.eval()
        with torch.no_grad():
            recs.append(stream_record("evallogits." + tag, model(x).float().numpy()))
    subprocess.run(["zstd", "-q", "-19", "-f", "-o", out], input=b"".join(recs) + stream_end(), check=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
