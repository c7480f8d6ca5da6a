"""The CIFAR python versions, written from binary-version files, for the tests.

    pickles.py FORM BIN OUT [cifar100]   the records of BIN as a data batch
    pickles.py meta FORM NAMES OUT [cifar100]   a batches.meta (or CIFAR-100 meta)

FORM is py2 - byte for byte the Python 2 cPickle (protocol 2) form of the official
files, written here opcode by opcode since no Python 2 is at hand - or p2 .. p5, the
same dict pickled by this Python 3 at that protocol (bytes keys, as
pickle.load(f, encoding='bytes') returns them), or p2s .. p5s with str keys."""
import pickle
import struct
import sys

import numpy as np


class Py2Writer:
    """cPickle protocol 2: SHORT_BINSTRING/BINSTRING strings, BINPUT/LONG_BINPUT
    memo entries numbered from 1 (cPickle's habit), MARK ... APPENDS/SETITEMS in
    batches of 1000."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = 1

    def put(self):
        self.out += (b"q" + bytes([self.memo])) if self.memo < 256 else (b"r" + struct.pack("<I", self.memo))
        self.memo += 1

    def string(self, s):
        s = s.encode() if isinstance(s, str) else s
        self.out += (b"U" + bytes([len(s)]) if len(s) < 256 else b"T" + struct.pack("<i", len(s))) + s
        self.put()

    def int(self, i):
        if 0 <= i < 256:
            self.out += b"K" + bytes([i])
        elif 0 <= i < 65536:
            self.out += b"M" + struct.pack("<H", i)
        else:
            self.out += b"J" + struct.pack("<i", i)

    def glob(self, module, name):
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self.put()

    def batched(self, items, write, close):
        for k in range(0, len(items), 1000):
            self.out += b"("
            for item in items[k:k + 1000]:
                write(item)
            self.out += close

    def ndarray_u8(self, a):
        self.glob("numpy.core.multiarray", "_reconstruct")
        self.glob("numpy", "ndarray")
        self.int(0)
        self.out += b"\x85"                  # TUPLE1: (0,)
        self.put()
        self.string(b"b")
        self.out += b"\x87"                  # TUPLE3
        self.put()
        self.out += b"R"                     # REDUCE: _reconstruct(ndarray, (0,), 'b')
        self.put()
        self.out += b"("                     # state: (1, shape, dtype, False, raw)
        self.int(1)
        for d in a.shape:
            self.int(d)
        self.out += b"\x86"                  # TUPLE2: the shape
        self.put()
        self.glob("numpy", "dtype")
        self.string(b"u1")
        self.int(0)
        self.int(1)
        self.out += b"\x87R"                 # dtype('u1', 0, 1)
        self.put()
        self.out += b"("
        self.int(3)
        self.string(b"|")
        self.out += b"NNN" + b"J" + struct.pack("<i", -1) + b"J" + struct.pack("<i", -1)
        self.int(0)
        self.out += b"t"
        self.put()
        self.out += b"b"                     # BUILD the dtype
        self.out += b"\x89"                  # NEWFALSE: not Fortran order
        self.string(a.tobytes())
        self.out += b"t"
        self.put()
        self.out += b"b"                     # BUILD the array

    def value(self, v):
        if isinstance(v, np.ndarray):
            self.ndarray_u8(v)
        elif isinstance(v, (bytes, str)):
            self.string(v)
        elif isinstance(v, int):
            self.int(v)
        elif isinstance(v, list):
            self.out += b"]"
            self.put()
            self.batched(v, self.value, b"e")
        else:
            raise TypeError(type(v))

    def dict(self, d):
        self.out += b"}"
        self.put()
        self.batched(list(d.items()), lambda kv: (self.string(kv[0]), self.value(kv[1])), b"u")
        self.out += b"."
        return bytes(self.out)


def batch_dict(path, cifar100):
    raw = np.fromfile(path, np.uint8)
    recs = raw.reshape(-1, 3074 if cifar100 else 3073)
    n = len(recs)
    pixels = np.ascontiguousarray(recs[:, -3072:])
    names = [b"image_%05d.png" % i for i in range(n)]
    if cifar100:
        return {b"filenames": names, b"batch_label": b"training batch 1 of 1",
                b"fine_labels": [int(v) for v in recs[:, 1]], b"coarse_labels": [int(v) for v in recs[:, 0]],
                b"data": pixels}
    return {b"data": pixels, b"labels": [int(v) for v in recs[:, 0]],
            b"batch_label": b"training batch 1 of 5", b"filenames": names}


def meta_dict(names_path, cifar100):
    names = [line.strip().encode() for line in open(names_path) if line.strip()]
    if cifar100:
        return {b"fine_label_names": names, b"coarse_label_names": names[:20]}
    return {b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072}


def dump(d, form):
    if form == "py2":
        return Py2Writer().dict(d)
    proto = int(form[1])
    if form.endswith("s"):
        d = {k.decode(): v for k, v in d.items()}
    return pickle.dumps(d, protocol=proto)


def main(args):
    if args[0] == "meta":
        form, names, out = args[1:4]
        d = meta_dict(names, len(args) > 4)
    else:
        form, path, out = args[:3]
        d = batch_dict(path, len(args) > 3)
    open(out, "wb").write(dump(d, form))


if __name__ == "__main__":
    main(sys.argv[1:])
