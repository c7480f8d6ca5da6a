"""Writes the malformed-input corpus (tests/corpus/<reader>/) and the fuzzing seed
corpora (tests/fuzz/corpus/<target>/). Run from the repository root, after make
(the checkpoint seeds come from build/incv3-ckpt):
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
from pickles import Py2Writer  # noqa: E402


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


def cifar_dict(n=3, labels=None, shape=None, key=b"labels"):
    pixels = np.random.default_rng(n).integers(0, 256, shape or (n, 3072), dtype=np.uint8)
    return {b"data": pixels, key: labels if labels is not None else [i % 10 for i in range(n)],
            b"batch_label": b"training batch 1 of 5", b"filenames": [b"a_%d.png" % i for i in range(n)]}


def py2(d):
    return Py2Writer().dict(d)


def valid_pickles():
    import pickle
    d = cifar_dict()
    out = {"py2": py2(d), "meta": py2({b"label_names": [b"airplane", b"automobile"]})}
    for proto in (2, 3, 4, 5):
        out["p%d" % proto] = pickle.dumps(d, protocol=proto)
    return out


def malformed_pickles():
    import pickle
    base = py2(cifar_dict())
    raw_at = base.index(b"T\x00\x24\x00\x00")          # BINSTRING of the 9216 pixel bytes
    out = {
        "global-os-system": b"\x80\x02cos\nsystem\nq\x01U\x02lsq\x02\x85q\x03Rq\x04.",
        "global-builtins-eval": b"\x80\x02cbuiltins\neval\nU\x011\x85R.",
        "stack-global-posix-system": b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x02ls\x85R.",
        "binstring-length-lies": base[:raw_at] + b"T\x00\x00\x01\x00" + base[raw_at + 5:],
        "binstring-negative-length": base[:raw_at] + b"T\xff\xff\xff\xff" + base[raw_at + 5:],
        "length-claims-2-gib": b"\x80\x02}(U\x04dataT\xff\xff\xff\x7f" + bytes(100),
        "binbytes8-claims-1-tib": b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + bytes(100),
        "memo-index-never-written": b"\x80\x02}q\x01(U\x04datah\xc8u.",
        "nesting-bomb-marks": b"\x80\x02" + b"(" * 100000 + b".",
        "nesting-bomb-lists": b"\x80\x02]" + b"]a" * 100000 + b".",
        "dict-without-data": py2({b"labels": [1, 2], b"batch_label": b"x"}),
        "not-a-dict": b"\x80\x02]q\x01.",
        "empty-stack-stop": b"\x80\x02.",
        "shape-not-Nx3072": py2(cifar_dict(shape=(3, 3071))),
        "shape-one-dimension": py2(cifar_dict(shape=(3072,), labels=[1])),
        "labels-out-of-range": py2(cifar_dict(labels=[1, 2, 10])),
        "labels-negative": py2(cifar_dict(labels=[1, -2, 3])),
        "fewer-labels-than-images": py2(cifar_dict(labels=[1, 2])),
        "labels-not-integers": py2(cifar_dict(labels=[b"a", b"b", b"c"])),
        "no-labels": py2(cifar_dict(key=b"other")),
        "unknown-opcode-inst": base[:2] + b"i" + base[2:],
        "unknown-opcode-zero": base[:-1] + b"\x00.",
        "fortran-order": base[:raw_at - 1] + b"\x88" + base[raw_at:],
        "dtype-float32": base.replace(b"U\x02u1", b"U\x02f4", 1),
        "bytes-after-stop": base + b"garbage",
        "truncated-header": base[:1],
        "latin1-above-ff": b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00\xc4\x80X\x06\x00\x00\x00latin1\x86R.",
        "reduce-of-a-string": b"\x80\x02U\x01a)R.",
        "protocol-1": b"\x80\x01}.",
        "setitems-odd": b"\x80\x02}(U\x04datau.",
        "append-to-dict": b"\x80\x02}K\x01a.",
        "meta-not-batch": py2({b"label_names": [b"cat"]}),
        "bytearray8-length-lies": pickle.dumps(cifar_dict(), protocol=5).replace(
            b"\x96\x00\x24\x00\x00", b"\x96\x00\x23\x00\x00", 1),
    }
    for cut in (2, 3, 40, 120, 300, raw_at + 3, len(base) // 2, len(base) - 60, len(base) - 1):
        out["truncated-at-%d" % cut] = base[:cut]
    return out


def npy(array):
    import io
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def fuzz_seeds():
    """Valid inputs of the npy, checkpoint and evaluate targets, and near misses."""
    out = {
        "npy/f32.npy": npy(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "npy/u8.npy": npy(np.arange(10, dtype=np.uint8)),
        "npy/i64-scalar.npy": npy(np.int64(7)),
        "npy/i32-empty.npy": npy(np.zeros((0, 4), np.int32)),
        "npy/version2.npy": b"\x93NUMPY\x02\x00" + struct.pack("<I", 54) +
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }".ljust(53) + b"\n" + bytes(4),
        "npy/fortran.npy": npy(np.asfortranarray(np.ones((2, 2), np.float32))),
        "evaluate/two-batches.tz": record("logits", np.eye(3, dtype=np.float32)) + record("y", np.arange(3)) +
            record("logits", -np.eye(3, dtype=np.float32)) + record("y", np.array([2, 1, 0], np.int32)) + END,
        "evaluate/nan-and-empty.tz": record("logits", np.array([[np.nan, 1.0]], np.float32)) + record("y", np.array([1])) +
            record("logits", np.zeros((0, 2), np.float32)) + record("y", np.zeros(0, np.int64)) + END,
        "evaluate/many-classes.tz": record("logits", np.zeros((1, 25), np.float32)) + record("y", np.array([24])) + END,
    }
    ckpt = "build-fuzz/seed.ckpt"
    os.makedirs("build-fuzz", exist_ok=True)
    subprocess.run(["build/incv3-ckpt", "init", "--width", "0.01", "--seed", "3", "-o", ckpt], check=True)
    compressed = open(ckpt, "rb").read()
    out["checkpoint/width-0.01.ckpt"] = compressed
    out["checkpoint/width-0.01-raw.ckpt"] = subprocess.run(["zstd", "-dc"], input=compressed, capture_output=True,
                                                           check=True).stdout
    return out


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
    for name, data in malformed_pickles().items():
        write("tests/corpus/pickle/%s.pkl" % name, data)
        write("tests/fuzz/corpus/pickle/%s.pkl" % name, data[:20000])
    for name, data in valid_pickles().items():
        write("tests/fuzz/corpus/pickle/valid-%s.pkl" % name, data)
        write("tests/fuzz/corpus/cifar/valid-%s.pkl" % name, data)
    for name, data in fuzz_seeds().items():
        write("tests/fuzz/corpus/%s" % name, data)
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
