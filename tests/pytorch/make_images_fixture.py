"""Writes tests/fixtures/images/: a small ImageFolder of PNG and JPEG files in the
forms people's pictures come in (RGB, grey, palette with and without transparency,
alpha, 1, 2, 4 and 16 bits, CMYK, progressive, 4:2:0 and 4:4:4 JPEG; smaller, larger
and as large as 32 on either side; nested folders whose order tells sorted(os.walk)
from a plain walk; upper-case extensions and a file torchvision passes over), and
what torchvision 0.14 makes of it: ImageFolder with Resize((32, 32)) and
PILToTensor on PIL 9.4, in expected/ (x.npy [N,3,32,32] u8, y.npy, paths.txt,
classes.txt). Also cifar/: a data set in ImageFolder form (train/ and val/, a folder
per class named as CIFAR-10 names them) of data/sample's images, PNG and JPEG in
turn, 12 a class for training and 6 for validation, for the end-to-end tests
of train and predict. For tests/images.bats. Run from the repository root with Debian's
python3-torchvision (needed only here, never by the tests):
    /usr/bin/python3 tests/pytorch/make_images_fixture.py tests/fixtures/images
"""
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import torch
from PIL import Image
from torchvision import datasets, transforms


def picture(w, h, seed, channels=3):
    """Smooth colours with some detail: what resizing has something to do with."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [(127 + 120 * np.sin(xx / (2 + c) + yy / (3 + seed % 5) + c)) for c in range(channels)]
    img = np.stack(planes, -1) + rng.integers(-20, 21, (h, w, channels))
    return np.clip(img, 0, 255).astype(np.uint8)


def png16(path, array, colour):
    """A 16-bit PNG (PIL writes none in colour): colour type 2 (RGB) or 0 (grey)."""
    h, w = array.shape[:2]
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw)))
        f.write(chunk(b"IEND", b""))


def make(root):
    def at(*parts):
        path = os.path.join(root, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    # class "Photos" (upper case sorts first): JPEG in every form
    Image.fromarray(picture(64, 48, 1)).save(at("Photos", "420.jpg"), quality=75)
    Image.fromarray(picture(45, 33, 2)).save(at("Photos", "444.jpg"), quality=90, subsampling=0)
    Image.fromarray(picture(300, 200, 3)).save(at("Photos", "big.JPEG"), quality=80)
    Image.fromarray(picture(40, 40, 4)).save(at("Photos", "progressive.jpeg"), progressive=True)
    Image.fromarray(picture(37, 29, 5)[..., 0]).save(at("Photos", "grey.jpg"))
    Image.fromarray(picture(36, 28, 6, 4), "CMYK").save(at("Photos", "cmyk.jpg"))
    Image.fromarray(picture(5, 3, 7)).save(at("Photos", "tiny.jpg"), quality=95)
    Image.fromarray(picture(32, 50, 8)).save(at("Photos", "w32.jpg"))
    with open(at("Photos", "notes.txt"), "w") as f:
        f.write("not an image, and no image extension: ImageFolder passes over it\n")

    # class "drawings": PNG in every form
    Image.fromarray(picture(40, 30, 11)).save(at("drawings", "rgb.png"))
    Image.fromarray(picture(33, 47, 12, 4), "RGBA").save(at("drawings", "rgba.png"))
    Image.fromarray(picture(50, 50, 13)[..., 0]).save(at("drawings", "grey.png"))
    Image.fromarray(picture(20, 64, 14, 2), "LA").save(at("drawings", "grey-alpha.png"))
    pal = Image.fromarray(picture(45, 45, 15)).quantize(16)
    pal.save(at("drawings", "palette.png"))
    pal.save(at("drawings", "palette-trns.png"), transparency=3)
    Image.fromarray(picture(32, 32, 16)[..., 0] > 128).save(at("drawings", "bits1.png"))
    for bits in (2, 4):
        Image.fromarray(picture(30, 34, 16 + bits)[..., 0]).save(at("drawings", f"bits{bits}.png"), bits=bits)
    png16(at("drawings", "rgb16.png"), picture(41, 23, 19).astype(np.uint16) * 257 + 3, 2)
    grey16 = (np.arange(31 * 27).reshape(27, 31) * 37 % 1000).astype(np.uint16)   # values past 255
    png16(at("drawings", "grey16.png"), grey16, 0)
    Image.fromarray(picture(64, 32, 20)).save(at("drawings", "H32.PNG"))

    # class "nested": sorted(os.walk) orders folders by whole path: "sub b" and
    # "sub-x" come before "sub/deeper", which a depth-first walk would take first
    for i, folder in enumerate(["", "sub", "sub b", "sub-x", os.path.join("sub", "deeper")]):
        for name in ("b.png", "A.jpg"):
            img = Image.fromarray(picture(24 + i, 20 + 2 * i, 30 + 3 * i + len(name)))
            img.save(at("nested", folder, name))


def expected(root, out):
    data = datasets.ImageFolder(root, transform=transforms.Compose(
        [transforms.Resize((32, 32)), transforms.PILToTensor()]))
    x = torch.stack([data[i][0] for i in range(len(data))]).numpy()
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "x.npy"), x)
    np.save(os.path.join(out, "y.npy"), np.array(data.targets, np.int64))
    with open(os.path.join(out, "paths.txt"), "w") as f:
        f.writelines(os.path.relpath(p, root) + "\n" for p, _ in data.samples)
    with open(os.path.join(out, "classes.txt"), "w") as f:
        f.writelines(c + "\n" for c in data.classes)


def cifar_folder(root):
    names = open("data/sample/batches.meta.txt").read().split()
    for split, source, per_class in (("train", "data_batch_1", 12), ("val", "test_batch", 6)):
        raw = subprocess.run(["zstd", "-dc", f"data/sample/{source}.bin.zst"], check=True,
                             capture_output=True).stdout
        rows = np.frombuffer(raw, np.uint8).reshape(-1, 3073)
        taken = {k: 0 for k in range(10)}
        for i, row in enumerate(rows):
            label = int(row[0])
            if taken[label] == per_class:
                continue
            img = Image.fromarray(row[1:].reshape(3, 32, 32).transpose(1, 2, 0))
            folder = os.path.join(root, split, names[label])
            os.makedirs(folder, exist_ok=True)
            if taken[label] % 2:
                img.save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)
            else:
                img.save(os.path.join(folder, f"{i:04d}.png"))
            taken[label] += 1


if __name__ == "__main__":
    top = sys.argv[1]
    shutil.rmtree(top, ignore_errors=True)
    make(os.path.join(top, "folder"))
    expected(os.path.join(top, "folder"), os.path.join(top, "expected"))
    cifar_folder(os.path.join(top, "cifar"))
