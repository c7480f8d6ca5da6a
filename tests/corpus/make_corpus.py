"""Writes the malformed-input corpus (tests/corpus/<reader>/) and the fuzzing seed
corpora (tests/fuzz/corpus/<target>/). Run from the repository root:
    /usr/bin/python3 tests/corpus/make_corpus.py
Each malformed file's name says what is wrong with it; tests/reliability.bats feeds
every one to its reader and expects one line, exit 1, no crash, no output file."""
import json
import os
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, "tests/helpers")
from streams import END, header, record  # noqa: E402


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").write(data)


def zstd(data):
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def cifar(n, labels=None, size=3073):
    rng = np.random.default_rng(n)
    recs = rng.integers(0, 256, (n, size), dtype=np.uint8)
    recs[:, 0] = labels if labels is not None else np.arange(n) % 10
    if size == 3074:
        recs[:, 1] = np.arange(n) % 100
    return recs.tobytes()


def safetensors(entries, blob=b"", raw_header=None):
    h = raw_header if raw_header is not None else json.dumps(entries).encode()
    return struct.pack("<Q", len(h)) + h + blob


def main():
    x = record("x", np.zeros((2, 3, 32, 32), np.uint8))
    y = record("y", np.array([1, 2], np.int64))
    good = zstd(x + y + END)
    streams = {
        "bad-magic": b"NOPE" + x[4:] + END,
        "bad-version": header("x", 4, (2, 3), version=9) + bytes(24) + END,
        "unknown-dtype": header("x", 77, (2, 3)) + bytes(24) + END,
        "rank-over-8": header("x", 4, (1,) * 9) + bytes(4) + END,
        "dims-overflow-64-bits": header("x", 4, (2**62, 2**62)) + END,
        "over-the-cap": header("x", 4, (2**40,)) + bytes(100) + END,
        "header-promises-more-than-payload": header("x", 4, (1000,)) + bytes(10),
        "no-end-record": x + y,
        "truncated-header": x + b"IV3T\x01",
        "empty-name": b"IV3T\x01\x04\x00\x00" + END,
        "nonprintable-name": header("a\x01", 1, (1,)) + b"\x00" + END,
        "empty": b"",
        "garbage": bytes(range(256)) * 4,
        "zstd-truncated": good[:-7],
        "zstd-corrupted": good[:20] + bytes(b ^ 0x5A for b in good[20:40]) + good[40:],
        "zstd-garbage-after-frame": good + b"garbage!",
    }
    for name, data in streams.items():
        write("tests/corpus/stream/%s.tz" % name, data)
    cifars = {
        "short": cifar(3)[:5000],
        "long": cifar(3) + b"\x00" * 17,
        "label-out-of-range": cifar(4, labels=[1, 2, 10, 3]),
        "label-255": cifar(2, labels=[255, 0]),
        "empty": b"",
    }
    for name, data in cifars.items():
        write("tests/corpus/cifar/%s.bin" % name, data)
    write("tests/corpus/cifar100/fine-label-out-of-range.bin",
          bytes([3, 100]) + bytes(3072) + bytes([1, 1]) + bytes(3072))
    lw = {"dtype": "F32", "shape": [10, 2], "data_offsets": [0, 80]}
    st = {
        "too-short": b"\x05\x00",
        "header-length-beyond-file": struct.pack("<Q", 10**6) + b"{}",
        "header-not-json": safetensors(None, raw_header=b"{not json"),
        "header-not-object": safetensors([1, 2, 3]),
        "offsets-beyond-data": safetensors({"linear.weight": {**lw, "data_offsets": [0, 800]}}, bytes(80)),
        "offsets-lie-about-size": safetensors({"linear.weight": {**lw, "data_offsets": [0, 40]}}, bytes(80)),
        "offsets-reversed": safetensors({"linear.weight": {**lw, "data_offsets": [80, 0]}}, bytes(80)),
        "shape-negative": safetensors({"linear.weight": {**lw, "shape": [-10, 2]}}, bytes(80)),
        "shape-fractional": safetensors({"linear.weight": {**lw, "shape": [2.5, 2]}}, bytes(80)),
        "shape-overflows": safetensors({"linear.weight": {**lw, "shape": [2**40, 2**40]}}, bytes(80)),
        "unknown-dtype": safetensors({"linear.weight": {**lw, "dtype": "F16"}}, bytes(80)),
        "no-linear-weight": safetensors({"other": lw}, bytes(80)),
        "missing-tensors": safetensors({"linear.weight": {**lw, "shape": [10, 128], "data_offsets": [0, 5120]}}, bytes(5120)),
        "extra-tensor": safetensors({"linear.weight": {**lw, "shape": [10, 128], "data_offsets": [0, 5120]},
                                     "bogus.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(5120)),
        "wrong-shape-for-model": safetensors({"linear.weight": {**lw, "shape": [10, 7], "data_offsets": [0, 280]},
                                              "Conv2d_1a_3x3.conv.weight": {"dtype": "F32", "shape": [5, 3, 3, 3], "data_offsets": [0, 540]}},
                                             bytes(540)),
    }
    for name, data in st.items():
        write("tests/corpus/safetensors/%s.safetensors" % name, data)
    # seeds for the fuzzers: valid inputs beside the malformed ones
    write("tests/fuzz/corpus/stream/valid-zstd.tz", good)
    write("tests/fuzz/corpus/stream/valid-raw.tz", x + y + END)
    write("tests/fuzz/corpus/stream/valid-meta.tz", record("meta", np.frombuffer(b"batches=1\n", np.uint8)) + y + END)
    for name, data in streams.items():
        if data:
            write("tests/fuzz/corpus/stream/%s.tz" % name, data)
    write("tests/fuzz/corpus/cifar/valid-3.bin", cifar(3))
    write("tests/fuzz/corpus/cifar/valid-100.bin", cifar(2, size=3074))
    for name, data in cifars.items():
        if data:
            write("tests/fuzz/corpus/cifar/%s.bin" % name, data[:20000])
    for name, data in st.items():
        write("tests/fuzz/corpus/safetensors/%s.safetensors" % name, data)


if __name__ == "__main__":
    main()
