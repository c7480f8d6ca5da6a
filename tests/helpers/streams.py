"""Helpers that speak the incv3 stream format directly (the format is small):
    streams.py raw FILE            records without end markers, zstd undone
    streams.py load FILE NAME K    print record NAME number K as numbers
    streams.py strings FILE NAME   the rows of every u8 [B, L] record NAME (names, path),
                                   NUL-padded, one a line; a u8 [L] record (meta) as it is
"""
import struct
import subprocess
import sys

import numpy as np

DT = {1: np.uint8, 2: np.int32, 3: np.int64, 4: np.float32, 5: np.uint16}


def header(name, dtype, dims, version=1, magic=b"IV3T"):
    return (struct.pack("<4sBBBB", magic, version, dtype, len(dims), len(name)) + name.encode()
            + struct.pack("<%dq" % len(dims), *dims))


def record(name, array):
    code = {np.dtype(v): k for k, v in DT.items()}[array.dtype]
    return header(name, code, array.shape) + array.tobytes()


END = header("end", 0, ())


def decompressed(path):
    data = open(path, "rb").read()
    if data[:4] == b"\x28\xb5\x2f\xfd":
        data = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return data


def parse(data):
    pos, out = 0, []
    while pos < len(data):
        _, _, dtype, rank, nl = struct.unpack_from("<4sBBBB", data, pos)
        name = data[pos + 8:pos + 8 + nl].decode()
        dims = struct.unpack_from("<%dq" % rank, data, pos + 8 + nl)
        start = pos + 8 + nl + 8 * rank
        size = int(np.prod(dims, dtype=np.int64)) * (np.dtype(DT[dtype]).itemsize if dtype else 0)
        out.append((name, dtype, dims, data[pos:start + size], data[start:start + size]))
        pos = start + size
    return out


def main():
    cmd = sys.argv[1]
    if cmd == "raw":
        for name, dtype, dims, rec, payload in parse(decompressed(sys.argv[2])):
            if dtype:
                sys.stdout.buffer.write(rec)
    elif cmd == "load":
        name, k = sys.argv[3], int(sys.argv[4])
        recs = [r for r in parse(decompressed(sys.argv[2])) if r[0] == name and r[1]]
        _, dtype, dims, _, payload = recs[k]
        a = np.frombuffer(payload, DT[dtype]).reshape(dims)
        print(" ".join(str(v) for v in a.ravel()))
    elif cmd == "strings":
        for name, dtype, dims, _, payload in parse(decompressed(sys.argv[2])):
            if name == sys.argv[3] and dtype == 1 and len(dims) == 1:
                sys.stdout.buffer.write(payload)
            elif name == sys.argv[3] and dtype == 1:
                for row in np.frombuffer(payload, np.uint8).reshape(dims):
                    sys.stdout.buffer.write(bytes(row).split(b"\0")[0] + b"\n")


if __name__ == "__main__":
    main()
