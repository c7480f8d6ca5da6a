"""Side by side: incv3's network in PyTorch (tests/pytorch/inceptionv3.py),
trained on the same batch size, thread count and model as incv3's benchmark, in
its best CPU layout (channels_last); PRECISION bf16 runs the forward under
torch.autocast("cpu", dtype=torch.bfloat16), as the model-zoo entry's --autocast.
Timed like incv3's: WARM seconds of untimed steps first (this machine runs
faster for its first ~25 s of load), then one more untimed step, then STEPS.
Prints one JSON line.
    python3 bench/pytorch.py BATCH THREADS STEPS WIDTH [fp32|bf16 [WARM (30)]]"""
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pytorch"))
from inceptionv3 import InceptionV3  # noqa: E402


def main(batch, threads, steps, width, precision, warm):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = InceptionV3(10, width).to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    def step():
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return batch / (time.perf_counter() - t)

    start = time.perf_counter()
    while time.perf_counter() - start < warm:
        step()
    step()                             # as incv3's first step, untimed
    rates = [step() for _ in range(steps)]
    print(json.dumps({"framework": "pytorch " + torch.__version__, "precision": precision, "batch": batch,
                      "threads": threads,
                      "images_per_s": statistics.median(rates),
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
         sys.argv[5] if len(sys.argv) > 5 else "fp32", float(sys.argv[6]) if len(sys.argv) > 6 else 30)
