"""Writes scikit-learn's digits (1,797 handwritten digits, 8x8 pixels of 17 grey levels,
from Debian's python3-sklearn) as an ImageFolder: ROOT/train/D/NNNN.png and
ROOT/val/D/NNNN.png, every fifth image to val (359 of them), grey levels 0..16
scaled to 0..255. A data set that is not CIFAR, for bench/finetune.
    /usr/bin/python3 bench/digits-imagefolder.py ROOT
"""
import os
import struct
import sys
import zlib

from sklearn.datasets import load_digits


def grey_png(path, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w = len(rows), len(rows[0])
    raw = b"".join(b"\0" + bytes(r) for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


digits = load_digits()
root = sys.argv[1]
for i, (image, label) in enumerate(zip(digits.images, digits.target)):
    split = "val" if i % 5 == 4 else "train"
    folder = os.path.join(root, split, str(label))
    os.makedirs(folder, exist_ok=True)
    grey_png(os.path.join(folder, f"{i:04d}.png"),
             [[int(round(v * 255 / 16)) for v in row] for row in image])
