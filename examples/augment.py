#!/usr/bin/env python3
"""A stage written outside C: random horizontal flips (and optional crops) of the
images in an incv3 tensor stream, with NumPy alone. It reads an uncompressed stream
on stdin and writes one on stdout; every record but x passes through unchanged.

    cifar-decode --raw -b 64 data_batch_1.bin | python3 examples/augment.py --flip | tensor ls

The format (man 5 incv3-stream): per record, magic "IV3T", version 1, dtype, rank,
name length, name, rank int64 dims, payload; an end record (dtype 0) closes the stream.
"""
import argparse
import os
import struct
import sys

import numpy as np

DTYPES = {1: np.uint8, 2: np.int32, 3: np.int64, 4: np.float32}


def read_exact(f, n):
    data = f.read(n)
    if len(data) != n:
        sys.exit("augment.py: truncated stream")
    return data


def records(f):
    """Yields (name, dtype code, array or None) until the end of the stream."""
    saw_end = False
    while True:
        head = f.read(8)
        if not head:
            if not saw_end:
                sys.exit("augment.py: stream ends without an end record")
            return
        if head[:4] == b"\x28\xb5\x2f\xfd":
            sys.exit("augment.py: compressed input; give the upstream stage --raw or pipe through 'zstd -dc'")
        if len(head) < 8:
            head += read_exact(f, 8 - len(head))
        magic, version, dtype, rank, namelen = struct.unpack("<4sBBBB", head)
        if magic != b"IV3T" or version != 1:
            sys.exit("augment.py: not an incv3 stream")
        name = read_exact(f, namelen).decode("ascii")
        if dtype == 0:
            saw_end = True
            continue
        saw_end = False
        dims = struct.unpack("<%dq" % rank, read_exact(f, 8 * rank))
        count = int(np.prod(dims, dtype=np.int64))
        array = np.frombuffer(read_exact(f, count * np.dtype(DTYPES[dtype]).itemsize), DTYPES[dtype])
        yield name, dtype, array.reshape(dims)


def write(out, name, array):
    code = {np.dtype(v): k for k, v in DTYPES.items()}[array.dtype]
    out.write(struct.pack("<4sBBBB", b"IV3T", 1, code, array.ndim, len(name)) + name.encode())
    out.write(struct.pack("<%dq" % array.ndim, *array.shape) + np.ascontiguousarray(array).tobytes())
    out.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flip", action="store_true", help="random horizontal flips")
    p.add_argument("--crop", type=int, default=0, help="random crops with this zero padding")
    p.add_argument("--seed", type=int, default=int(os.environ.get("INCV3_SEED", 0)))
    p.add_argument("--epoch", type=int, default=int(os.environ.get("INCV3_EPOCH", 0)))
    args = p.parse_args()
    rng = np.random.default_rng([args.seed, args.epoch])
    out = sys.stdout.buffer
    for name, dtype, a in records(sys.stdin.buffer):
        if name == "x" and a.ndim == 4:
            a = a.copy()
            if args.flip:
                flip = rng.random(len(a)) < 0.5
                a[flip] = a[flip][..., ::-1]
            if args.crop:
                p_ = args.crop
                padded = np.pad(a, ((0, 0), (0, 0), (p_, p_), (p_, p_)))
                for i, (dy, dx) in enumerate(rng.integers(0, 2 * p_ + 1, (len(a), 2))):
                    a[i] = padded[i, :, dy:dy + a.shape[2], dx:dx + a.shape[3]]
        write(out, name, a)
    out.write(struct.pack("<4sBBBB", b"IV3T", 1, 0, 0, 3) + b"end")


if __name__ == "__main__":
    main()
