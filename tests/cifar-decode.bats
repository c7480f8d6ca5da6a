#!/usr/bin/env bats
# cifar-decode: exact round trip, CIFAR-100 labels, shuffle, shards, limits, errors.

load helpers/common

@test "decode then export to .npy equals the source bytes and labels exactly" {
    make_cifar "$T/a.bin" 50
    cifar-decode -b 50 "$T/a.bin" -o "$T/a.tz"
    tensor export x -o "$T/x.npy" "$T/a.tz"
    tensor export y -o "$T/y.npy" "$T/a.tz"
    run "$PY" -c "
import numpy as np
raw = np.fromfile('$T/a.bin', np.uint8).reshape(50, 3073)
x = np.load('$T/x.npy'); y = np.load('$T/y.npy')
assert x.shape == (50, 3, 32, 32) and x.dtype == np.uint8, x.shape
assert (x.reshape(50, 3072) == raw[:, 1:]).all()
assert (y == raw[:, 0]).all() and y.dtype == np.int64
print('exact')"
    assert_success
    assert_output exact
}

@test "the embedded sample decodes: 4000 training and 1000 test images, first labels as CIFAR-10" {
    run bash -c "cifar-decode -b 4000 '$SAMPLE/data_batch_1.bin.zst' | tensor ls"
    assert_success
    assert_line --regexp '^x +u8 +\[4000,3,32,32\]'
    cifar-decode -b 10 --limit 10 "$SAMPLE/test_batch.bin.zst" -o "$T/t.tz"
    run "$PY" "$HELPERS/streams.py" load "$T/t.tz" y 0
    assert_output "3 8 8 0 6 6 1 6 3 1"
}

@test "CIFAR-100: fine and coarse labels" {
    make_cifar "$T/c.bin" 30 cifar100
    cifar-decode --cifar100 fine -b 30 "$T/c.bin" -o "$T/f.tz"
    cifar-decode --cifar100 coarse -b 30 "$T/c.bin" -o "$T/k.tz"
    run "$PY" "$HELPERS/streams.py" load "$T/f.tz" y 0
    assert_output "$("$PY" -c "print(' '.join(str(i * 7 % 100) for i in range(30)))")"
    run "$PY" "$HELPERS/streams.py" load "$T/k.tz" y 0
    assert_output "$("$PY" -c "print(' '.join(str(i * 3 % 20) for i in range(30)))")"
}

@test "shuffle is a permutation, new each epoch, the same for the same seed and epoch" {
    make_cifar "$T/a.bin" 100
    for args in "1 0" "1 0b" "1 1" "2 0"; do
        set -- $args
        cifar-decode -b 100 --shuffle "$1" --epoch "${2%b}" "$T/a.bin" -o "$T/s$1$2.tz"
        "$PY" "$HELPERS/streams.py" load "$T/s$1$2.tz" idx 0 > "$T/p$1$2"
    done
    run "$PY" -c "print(sorted(map(int, open('$T/p10').read().split())) == list(range(100)))"
    assert_output True
    run cmp "$T/p10" "$T/p10b"
    assert_success
    run cmp -s "$T/p10" "$T/p11"
    assert_failure
    run cmp -s "$T/p10" "$T/p20"
    assert_failure
    # the pixels follow their records
    run "$PY" -c "
import numpy as np, subprocess
raw = np.fromfile('$T/a.bin', np.uint8).reshape(100, 3073)
idx = list(map(int, open('$T/p10').read().split()))
subprocess.run(['tensor', 'export', 'x', '-o', '$T/x.npy', '$T/s10.tz'], check=True)
x = np.load('$T/x.npy').reshape(100, 3072)
print((x == raw[idx, 1:]).all())"
    assert_output True
}

@test "the shards of a global batch are disjoint, contiguous and cover it" {
    make_cifar "$T/a.bin" 96
    cifar-decode -b 24 --shuffle 5 --epoch 2 "$T/a.bin" -o "$T/all.tz"
    for i in 0 1 2; do cifar-decode -b 8 --shuffle 5 --epoch 2 --shard $i/3 "$T/a.bin" -o "$T/s$i.tz"; done
    run "$PY" - <<PYEOF
import subprocess
def idx(path, k):
    return subprocess.run(["$PY", "$HELPERS/streams.py", "load", path, "idx", str(k)],
                          capture_output=True, text=True, check=True).stdout.split()
for k in range(4):
    whole = idx("$T/all.tz", k)
    parts = [idx("$T/s%d.tz" % i, k) for i in range(3)]
    assert parts[0] + parts[1] + parts[2] == whole, k
    assert len(set(parts[0]) | set(parts[1]) | set(parts[2])) == 24
print("ok")
PYEOF
    assert_output ok
}

@test "--limit takes the first records; --drop-last omits the short batch" {
    make_cifar "$T/a.bin" 50
    run bash -c "cifar-decode -b 16 --limit 40 '$T/a.bin' | tensor ls | grep -c '^x '"
    assert_output 3
    run bash -c "cifar-decode -b 16 --limit 40 --drop-last '$T/a.bin' | tensor ls | grep -c '^x '"
    assert_output 2
    run bash -c "cifar-decode -b 16 --limit 40 '$T/a.bin' | tensor ls | grep '^x ' | tail -1"
    assert_output --regexp '\[8,3,32,32\]'
}

@test "zstd-compressed input decodes like plain input" {
    make_cifar "$T/a.bin" 20
    zstd -q "$T/a.bin" -o "$T/a.bin.zst"
    cifar-decode "$T/a.bin" -o "$T/p.tz"
    cifar-decode "$T/a.bin.zst" -o "$T/z.tz"
    [ "$(raw_stream "$T/p.tz" | sha256sum)" = "$(raw_stream "$T/z.tz" | sha256sum)" ]
}

@test "a file that is not whole records: one-line error naming it, exit 1, no output file" {
    make_cifar "$T/a.bin" 3
    head -c 5000 "$T/a.bin" > "$T/short.bin"
    run cifar-decode "$T/short.bin" -o "$T/out.tz"
    assert_failure 1
    assert_one_line_error cifar-decode
    assert_output --partial "short.bin"
    assert_output --partial "whole number of 3073-byte"
    [ ! -e "$T/out.tz" ]
    [ -z "$(ls "$T" | grep tmp)" ]
}

@test "a label out of range names file and record" {
    make_cifar "$T/a.bin" 5
    printf '\x0c' | dd of="$T/a.bin" bs=1 seek=$((3 * 3073)) conv=notrunc status=none
    run cifar-decode "$T/a.bin"
    assert_failure 1
    assert_one_line_error cifar-decode
    assert_output --partial "record 3"
    assert_output --partial "label 12"
}

@test "missing file, empty file, corrupt zstd: exit 1 with one line" {
    run cifar-decode "$T/none.bin"
    assert_failure 1
    assert_one_line_error cifar-decode
    assert_output --partial "none.bin"
    : > "$T/empty.bin"
    run cifar-decode "$T/empty.bin"
    assert_failure 1
    assert_one_line_error cifar-decode
    make_cifar "$T/a.bin" 20
    zstd -q "$T/a.bin" -o "$T/a.zst"
    head -c $(( $(stat -c %s "$T/a.zst") - 12 )) "$T/a.zst" > "$T/cut.zst"
    run cifar-decode "$T/cut.zst"
    assert_failure 1
    assert_one_line_error cifar-decode
    assert_output --partial "zstd"
}

@test "bad options exit 2" {
    make_cifar "$T/a.bin" 2
    for args in "-b 0" "--shard 3/3" "--shard x" "--cifar100 medium" "--bogus" "--limit -1" ""; do
        run cifar-decode $args ${args:+"$T/a.bin"}
        assert_failure 2
        assert_one_line_error cifar-decode
    done
    run cifar-decode --help
    assert_success
    assert_output --partial "usage: cifar-decode"
}
