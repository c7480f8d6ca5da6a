"""The PyTorch side of time to accuracy: `train --recipe fast`'s recipe in PyTorch 1.13
on the same CIFAR-10 files, the same threads and the same model
(tests/pytorch/inceptionv3.py at width 0.25, channels_last): batch 128, SGD with
Nesterov momentum 0.9 and weight decay 5e-4 on every parameter, lr 0.1 with a linear
warm-up per step over the first sixth of the run then linear decay to 0 at its end,
cross-entropy with label smoothing 0.2; random crop 32 with padding 4, horizontal flip
and rotation of up to 15 degrees (torchvision on uint8 tensors, in this process),
CIFAR-10's normalisation; after each epoch the test set with flip TTA (the mean of each
image's and its mirror's logits). Stops after STOP of the EPOCHS epochs; prints one JSON
line an epoch, with the seconds of its training and of its evaluation.
    python3 bench/time-to-accuracy.py DATA-DIR THREADS EPOCHS STOP [fp32|bf16]"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
from inceptionv3 import InceptionV3  # noqa: E402

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def load(path):
    raw = open(path, "rb").read()
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        raw = subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    rows = np.frombuffer(raw, np.uint8).reshape(-1, 3073)
    return torch.from_numpy(rows[:, 1:].reshape(-1, 3, 32, 32).copy()), torch.from_numpy(rows[:, 0].astype(np.int64))


def find(data, name):
    for suffix in ("", ".bin", ".bin.zst", ".zst"):
        if os.path.exists(os.path.join(data, name + suffix)):
            return os.path.join(data, name + suffix)
    raise SystemExit(f"time-to-accuracy.py: no {name} in {data}")


def main(data, threads, epochs, stop, precision):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    parts = [load(find(data, f"data_batch_{i}")) for i in range(1, 6)]
    x_train, y_train = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    x_test, y_test = load(find(data, "test_batch"))
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  transforms.RandomRotation(15)])
    model = InceptionV3(10, 0.25).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    batch = 128
    steps_per_epoch = len(x_train) // batch                     # the last incomplete batch is left out
    total, warm = epochs * steps_per_epoch, epochs * steps_per_epoch / 6

    def lr_at(step):                                            # step counts from 1
        return 0.1 * (step / warm if step <= warm else max(0.0, (total - step) / (total - warm)))

    def normalise(x):
        return ((x.float() / 255 - MEAN) / STD).contiguous(memory_format=torch.channels_last)

    step = 0
    for epoch in range(stop):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train))
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            x = normalise(torch.stack([augment(img) for img in x_train[idx]]))
            step += 1
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(model(x), y_train[idx], label_smoothing=0.2)
            loss.backward()
            opt.step()
        train_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.eval()
        correct = 0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for b in range(0, len(x_test), 500):
                x = normalise(x_test[b:b + 500])
                logits = (model(x).float() + model(torch.flip(x, dims=[3])).float()) / 2
                correct += int((logits.argmax(1) == y_test[b:b + 500]).sum())
        print(json.dumps({"framework": "pytorch " + torch.__version__, "precision": precision, "epoch": epoch + 1,
                          "test_top1": correct / len(x_test), "train_seconds": round(train_seconds, 1),
                          "eval_seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
         sys.argv[5] if len(sys.argv) > 5 else "fp32")
