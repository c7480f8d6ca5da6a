"""Writes tests/fixtures/taps.tz: what PyTorch's forward hooks and full backward
hooks see of some modules of the conformance fixture's model (its initial state,
batch and loss, from tests/fixtures/conformance.tz; float64), in a training step
(outputs and gradients) and in inference from the initial state (outputs), for tests/unit/test_taps.c.
Run with Debian's python3-torch:
    /usr/bin/python3 tests/pytorch/make_taps_fixture.py tests/fixtures/conformance.tz tests/fixtures/taps.tz
"""
import struct
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

from inceptionv3 import InceptionV3, stream_end, stream_record

AUX_WEIGHT = 0.4
# a unit, a Sequential, blocks, the two pool branches, the auxiliary head's pool, the head
MODULES = ["Conv2d_1a_3x3", "Mixed_5b.branch5x5", "Mixed_5b", "Mixed_6a.branchpool",
           "Mixed_6e.branch7x7stack.3", "Mixed_7a.branchpool", "Mixed_7c", "AuxLogits.pool",
           "AuxLogits.conv1", "avgpool", "linear"]
DT = {1: np.uint8, 2: np.int32, 3: np.int64, 4: np.float32}


def read_stream(path):
    data = subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    recs, at = {}, 0
    while at < len(data):
        _, _, dtype, rank, nlen = struct.unpack_from("<4sBBBB", data, at)
        at += 8
        name = data[at:at + nlen].decode()
        at += nlen
        dims = struct.unpack_from("<%dq" % rank, data, at)
        at += 8 * rank
        if name == "end":
            break
        n = int(np.prod(dims)) if rank else 1
        a = np.frombuffer(data, DT[dtype], n, at).reshape(dims)
        at += a.nbytes
        recs[name] = a
    return recs


def main(src, out):
    r = read_stream(src)
    classes, _, _ = (int(v) for v in r["config"])
    model = InceptionV3(classes, float(r["width"][0]), aux=True)
    model.dropout.p = 0.0
    state = {k[5:]: torch.from_numpy(v.copy()) for k, v in r.items() if k.startswith("init.")}
    model.load_state_dict(state, strict=True)
    model.double()
    x, y = torch.from_numpy(r["x"].copy()).double(), torch.from_numpy(r["y"].copy())
    values, grads = {}, {}
    modules = dict(model.named_modules())
    for name in MODULES:
        modules[name].register_forward_hook(lambda mod, i, o, name=name: values.__setitem__(name, o.detach().clone()))
        modules[name].register_full_backward_hook(lambda mod, gi, go, name=name: grads.__setitem__(name, go[0].clone()))
    model.train()
    logits, aux = model(x)
    loss = F.cross_entropy(logits, y) + AUX_WEIGHT * F.cross_entropy(aux, y)
    loss.backward()
    recs = [stream_record("names", np.frombuffer("\n".join(MODULES).encode(), np.uint8))]
    for name in MODULES:
        recs += [stream_record("tap." + name, values[name].float().numpy()),
                 stream_record("tapgrad." + name, grads[name].float().numpy())]
    values.clear()
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    model.eval()                                # from the initial state: the step moved the statistics
    with torch.no_grad():
        model(x)
    recs += [stream_record("evaltap." + name, values[name].float().numpy())
             for name in MODULES if name in values]
    subprocess.run(["zstd", "-q", "-19", "-f", "-o", out], input=b"".join(recs) + stream_end(), check=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
