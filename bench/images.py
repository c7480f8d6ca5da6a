"""bench/images, its two halves in Python:
    images.py make ROOT N SIDE   N pictures of SIDE x SIDE (data/sample's images scaled up),
                                 PNG and JPEG in turn, as an ImageFolder of 10 classes
    images.py torchvision ROOT   seconds for torchvision 0.14's ImageFolder with
                                 Resize((32, 32)) and PILToTensor over every image, one thread
"""
import os
import subprocess
import sys
import time

import numpy as np


def make(root, n, side):
    from PIL import Image
    raw = subprocess.run(["zstd", "-dc", "data/sample/test_batch.bin.zst"], check=True, capture_output=True).stdout
    rows = np.frombuffer(raw, np.uint8).reshape(-1, 3073)
    for i in range(n):
        row = rows[i % len(rows)]
        img = Image.fromarray(row[1:].reshape(3, 32, 32).transpose(1, 2, 0))
        if side != 32:
            img = img.resize((side, side), Image.BICUBIC)
        folder = os.path.join(root, str(row[0]))
        os.makedirs(folder, exist_ok=True)
        if i % 2:
            img.save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)
        else:
            img.save(os.path.join(folder, f"{i:05d}.png"))


def torchvision_seconds(root):
    import torch
    from torchvision import datasets, transforms
    torch.set_num_threads(1)
    data = datasets.ImageFolder(root, transform=transforms.Compose(
        [transforms.Resize((32, 32)), transforms.PILToTensor()]))
    t0 = time.perf_counter()
    for i in range(len(data)):
        data[i]
    return time.perf_counter() - t0


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        print(f"{torchvision_seconds(sys.argv[2]):.3f}")
