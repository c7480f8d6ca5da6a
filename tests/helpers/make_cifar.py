"""make_cifar.py FILE N [cifar100]: N deterministic CIFAR records (labels cycle,
pixels a function of record, channel and position)."""
import sys

import numpy as np


def main(path, n, kind="cifar10"):
    n = int(n)
    i = np.arange(n)[:, None, None]
    c = np.arange(3)[None, :, None]
    p = np.arange(1024)[None, None, :]
    pixels = ((i * 37 + c * 101 + p * 7) % 256).astype(np.uint8).reshape(n, 3072)
    if kind == "cifar100":
        labels = np.stack([(np.arange(n) * 3) % 20, (np.arange(n) * 7) % 100], 1).astype(np.uint8)
    else:
        labels = ((np.arange(n) * 3) % 10).astype(np.uint8)[:, None]
    np.concatenate([labels, pixels], 1).tofile(path)


if __name__ == "__main__":
    main(*sys.argv[1:])
