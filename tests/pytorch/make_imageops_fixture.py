"""Writes tests/fixtures/imageops.tz: what torchvision 0.14 makes of CIFAR images
under each image operation of its augmentation policies (uint8 tensors, the
policies' own entry point autoaugment._apply_op, nearest interpolation), at
magnitudes from the policies' tables and with both signs, with the default fill
and with a colour fill; AutoAugment's CIFAR-10 policy; and the magnitude tables of AutoAugment (10 bins),
RandAugment and TrivialAugmentWide (31 bins) for 32x32 images. For
tests/unit/test_imageops.c. Run with Debian's python3-torchvision (it is needed
only here, never by the tests):
    /usr/bin/python3 tests/pytorch/make_imageops_fixture.py tests/fixtures/imageops.tz
"""
import subprocess
import sys

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, autoaugment

from inceptionv3 import stream_end, stream_record

SAMPLE = "data/sample/test_batch.bin.zst"
FILL = [10.0, 200.0, 30.0]


def images():
    raw = subprocess.run(["zstd", "-dc", SAMPLE], check=True, capture_output=True).stdout
    rows = np.frombuffer(raw, np.uint8).reshape(-1, 3073)[:6, 1:].reshape(-1, 3, 32, 32)
    flat = np.full((1, 3, 32, 32), 77, np.uint8)                    # one grey: nothing to stretch
    ramp = (100 + np.arange(32 * 32 * 3) % 41).astype(np.uint8).reshape(1, 3, 32, 32)  # a narrow range
    return np.concatenate([rows, flat, ramp])


def spaces():
    size = (32, 32)
    return {"auto": autoaugment.AutoAugment()._augmentation_space(10, size),
            "rand": autoaugment.RandAugment()._augmentation_space(31, size),
            "wide": autoaugment.TrivialAugmentWide()._augmentation_space(31)}


def apply(op, magnitude, x, fill=None):
    out = [autoaugment._apply_op(torch.from_numpy(img.copy()), op, magnitude,
                                 interpolation=InterpolationMode.NEAREST, fill=fill)
           for img in x]
    return torch.stack(out).numpy()


def main(path):
    x = images()
    gray = x[:3, :1].copy()                     # single-channel images
    out = [stream_record("images", x), stream_record("images1", gray)]
    tables = spaces()
    for space, table in tables.items():
        for op, (mags, signed) in table.items():
            m = mags.reshape(-1).float().numpy()
            out += [stream_record("table.%s.%s" % (space, op), m),
                    stream_record("signed.%s.%s" % (space, op), np.array([int(signed)], np.uint8))]
    # every op of every space, at bins across the auto and wide tables, both signs
    cases = {}
    for space, bins in (("auto", (1, 5, 9)), ("wide", (3, 17, 30))):
        for op, (mags, signed) in tables[space].items():
            if mags.ndim == 0:
                cases.setdefault(op, []).append(0.0)
                continue
            for b in bins:
                m = float(mags[b].item())
                cases.setdefault(op, []).append(m)
                if signed:
                    cases[op].append(-m)
    for op, mags in cases.items():
        for k, m in enumerate(dict.fromkeys(mags)):    # in order, once each
            tag = "%s.%d" % (op, k)
            out += [stream_record("mag." + tag, np.array([m], np.float32)),
                    stream_record("out." + tag, apply(op, m, x)),
                    stream_record("out1." + tag, apply(op, m, gray))]
            if op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
                out.append(stream_record("fill." + tag, apply(op, m, x, FILL)))
    out.append(stream_record("fill", np.array(FILL, np.float32)))
    # AutoAugment's CIFAR-10 policy: sub-policy i, op j: (probability, bin or -1)
    policy = autoaugment.AutoAugment(autoaugment.AutoAugmentPolicy.CIFAR10).policies
    for i, sub in enumerate(policy):
        for j, (op, p, b) in enumerate(sub):
            out.append(stream_record("cifar10.%d.%d.%s" % (i, j, op),
                                     np.array([p, -1 if b is None else b], np.float32)))
    subprocess.run(["zstd", "-19", "-q", "-f", "-o", path], input=b"".join(out) + stream_end(), check=True)


if __name__ == "__main__":
    main(sys.argv[1])
