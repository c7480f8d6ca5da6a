#!/usr/bin/env bats
# tensor: listing with statistics, .npy export and import, PNG grids.

load helpers/common

@test "ls lists each record with dtype, shape, offset and statistics" {
    make_cifar "$T/a.bin" 10
    cifar-decode -b 10 "$T/a.bin" | augment --normalize cifar10 > "$T/s.tz"
    run tensor ls "$T/s.tz"
    assert_success
    assert_line --index 0 --regexp '^name +dtype +shape +offset +min +max +mean +std +nan$'
    assert_line --regexp '^meta +u8 '
    assert_line --regexp '^x +f32 +\[10,3,32,32\] '
    assert_line --regexp '^y +i64 +\[10\] +[0-9]+ +0 +9 +'
}

@test "ls counts NaNs" {
    "$PY" -c "import numpy as np; np.save('$T/n.npy', np.array([1, np.nan, 3, np.nan], np.float32))"
    tensor import v "$T/n.npy" -o "$T/n.tz"
    run tensor ls "$T/n.tz"
    assert_line --regexp '^v +f32 +\[4\] +0 +1 +3 +2 +1 +2$'
}

@test ".npy round trip: import then export gives NumPy the same array, every dtype" {
    for dt in uint8 int32 int64 float32; do
        "$PY" -c "import numpy as np; np.save('$T/a.npy', (np.arange(24).reshape(2,3,4) * 3 - 7).astype('$dt'))"
        tensor import data "$T/a.npy" -o "$T/a.tz"
        tensor export data -o "$T/b.npy" "$T/a.tz"
        run "$PY" -c "import numpy as np; a=np.load('$T/a.npy'); b=np.load('$T/b.npy'); print(a.dtype==b.dtype and a.shape==b.shape and (a==b).all())"
        assert_output True
    done
}

@test "export picks the K-th record of a name" {
    make_cifar "$T/a.bin" 30
    cifar-decode -b 10 "$T/a.bin" -o "$T/s.tz"
    tensor export y -i 2 -o "$T/y.npy" "$T/s.tz"
    run "$PY" -c "import numpy as np; print(list(np.load('$T/y.npy')))"
    assert_output "$("$PY" -c "print([i * 3 % 10 for i in range(20, 30)])")"
    run tensor export y -i 3 -o "$T/y3.npy" "$T/s.tz"
    assert_failure 1
    assert_output --partial "no record 'y' number 3"
    [ ! -e "$T/y3.npy" ]
}

@test "png renders a batch as a grid of the documented size, u8 or de-normalised f32" {
    cifar-decode -b 10 --limit 10 "$SAMPLE/test_batch.bin.zst" -o "$T/u.tz"
    augment --normalize cifar10 "$T/u.tz" -o "$T/f.tz"
    tensor png -o "$T/u.png" "$T/u.tz"
    tensor png --normalize cifar10 -o "$T/f.png" "$T/f.tz"
    # 10 images: 4 columns, 3 rows of 64-pixel images with 1-pixel gaps
    run file "$T/u.png"
    assert_output --partial "PNG image data, 261 x 196"
    run "$PY" - "$T" <<'PYEOF'
import sys, zlib, struct, numpy as np
def pixels(path):
    data = open(path, "rb").read()
    w, h = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT": idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(idat)
    return raw, w, h
a, w, h = pixels(sys.argv[1] + "/u.png")
b, _, _ = pixels(sys.argv[1] + "/f.png")
print(w, h, len(a) == len(b))
PYEOF
    assert_output "261 196 True"
}

@test "png of a record that is not an image batch is an error" {
    "$PY" -c "import numpy as np; np.save('$T/v.npy', np.zeros(5, np.float32))"
    tensor import x "$T/v.npy" -o "$T/v.tz"
    run tensor png -o "$T/v.png" "$T/v.tz"
    assert_failure 1
    assert_one_line_error tensor
    [ ! -e "$T/v.png" ]
}

@test "malformed .npy files are one-line errors" {
    printf 'not numpy at all' > "$T/bad.npy"
    run tensor import x "$T/bad.npy"
    assert_failure 1
    assert_one_line_error tensor
    "$PY" -c "import numpy as np; np.save('$T/c.npy', np.zeros(4, np.complex64))"
    run tensor import x "$T/c.npy"
    assert_failure 1
    assert_output --partial "unsupported .npy dtype"
    "$PY" -c "import numpy as np; np.save('$T/f.npy', np.asfortranarray(np.zeros((3, 2), np.float32)))"
    run tensor import x "$T/f.npy"
    assert_failure 1
    assert_output --partial "Fortran"
    "$PY" -c "import numpy as np; np.save('$T/t.npy', np.zeros(100, np.float32))"
    head -c 200 "$T/t.npy" > "$T/t2.npy"
    run tensor import x "$T/t2.npy"
    assert_failure 1
    assert_output --partial "header says"
}

@test "bad commands and options exit 2" {
    for args in "" "frobnicate" "export" "png" "ls a b"; do
        run tensor $args
        assert_failure 2
        assert_one_line_error tensor
    done
}

@test "png draws a feature map as the channels of one image, each stretched; the first tap by default" {
    cifar-decode -b 4 --limit 4 "$SAMPLE/test_batch.bin.zst" | incv3-step -c "$T/m.ckpt" --width 0.125 --quiet --log /dev/null
    cifar-decode -b 4 --limit 4 "$SAMPLE/test_batch.bin.zst" | incv3-step --eval -c "$T/m.ckpt" --tap Mixed_5b,Conv2d_1a_3x3 > "$T/t.tz"
    tensor png -o "$T/m.png" "$T/t.tz"                      # tap.Mixed_5b: 32 maps of 30x30
    run file "$T/m.png"
    assert_output --partial "PNG image data, 367 x 367"     # 6 x 6 tiles of 60 + a gap
    tensor png -r tap.Conv2d_1a_3x3 --image 3 --scale 1 -o "$T/c.png" "$T/t.tz"   # 4 maps of 32x32
    run file "$T/c.png"
    assert_output --partial "PNG image data, 67 x 67"
    run tensor png -r tap.Conv2d_1a_3x3 --image 4 -o "$T/no.png" "$T/t.tz"
    assert_failure 1
    assert_one_line_error tensor
    [ ! -e "$T/no.png" ]
}

@test "plot-stats draws a run's update ratios and dead-ReLU shares" {
    cifar-decode -b 32 --limit 128 "$SAMPLE/data_batch_1.bin.zst" \
        | incv3-step -c "$T/m.ckpt" --width 0.125 --stats 1 --quiet --log "$T/log"
    "$BATS_TEST_DIRNAME/../pipelines/plot-stats" "$T/log" "$T/pics"
    run file "$T/pics/updates.png" "$T/pics/dead-relu.png"
    assert_line --regexp "updates.png: +PNG image data, 900 x 600"
    assert_line --regexp "dead-relu.png: +PNG image data, 900 x 600"
    run "$BATS_TEST_DIRNAME/../pipelines/plot-stats" "$T/m.ckpt" "$T/pics"
    assert_failure 1
}
