#!/usr/bin/env bats
# image-decode: people's own pictures, as torchvision's ImageFolder and PIL read them.

load helpers/common

FIXTURE="$ROOT/tests/fixtures/images"

# the image at position $2 of record x in stream $1 against the fixture's: "max N"
compare_to_fixture() {
    tensor export x -o "$T/x.npy" "$1"
    "$PY" - "$T/x.npy" "$FIXTURE/expected/x.npy" <<'PY'
import sys
import numpy as np
got, want = (np.load(p).astype(int) for p in sys.argv[1:3])
assert got.shape == want.shape, (got.shape, want.shape)
print("max", np.abs(got - want).max(), "differing", int((got != want).sum()))
PY
}

@test "an ImageFolder of PNG and JPEG in every form: torchvision's bytes, order, labels and classes" {
    image-decode -b 1000 --paths "$FIXTURE/folder" > "$T/all.tz"
    run compare_to_fixture "$T/all.tz"
    assert_output "max 0 differing 0"
    run "$PY" "$HELPERS/streams.py" load "$T/all.tz" y 0
    assert_output "$("$PY" -c "import numpy; print(' '.join(map(str, numpy.load('$FIXTURE/expected/y.npy'))))")"
    "$PY" "$HELPERS/streams.py" strings "$T/all.tz" path | sed "s|^$FIXTURE/folder/||" > "$T/paths.txt"
    diff "$FIXTURE/expected/paths.txt" "$T/paths.txt"
    "$PY" "$HELPERS/streams.py" strings "$T/all.tz" names > "$T/classes.txt"
    diff "$FIXTURE/expected/classes.txt" "$T/classes.txt"
    run tensor ls "$T/all.tz"
    assert_line --regexp "^x +u8 +\[30,3,32,32\]"
    "$PY" "$HELPERS/streams.py" strings "$T/all.tz" meta | grep -qx "format=imagefolder"
}

@test "batches, shuffle, shards and limits mean what they mean in cifar-decode" {
    image-decode -b 8 --shuffle 5 --epoch 2 "$FIXTURE/folder" > "$T/a.tz"
    image-decode -b 8 --shuffle 5 --epoch 2 --threads 1 "$FIXTURE/folder" > "$T/b.tz"
    cmp "$T/a.tz" "$T/b.tz"                      # same bytes on one thread or all
    run tensor ls "$T/a.tz"
    [ "$(grep -c '^x ' <<< "$output")" -eq 4 ]
    assert_line --regexp "^x +u8 +\[6,3,32,32\]"
    image-decode -b 8 --shuffle 5 --epoch 3 "$FIXTURE/folder" > "$T/c.tz"
    ! cmp -s "$T/a.tz" "$T/c.tz"
    run image-decode --count --limit 7 "$FIXTURE/folder"
    assert_output 7
    image-decode -b 4 --shard 1/2 --drop-last "$FIXTURE/folder" > "$T/s.tz"
    run "$PY" "$HELPERS/streams.py" load "$T/s.tz" idx 0
    assert_output "4 5 6 7"
    run tensor ls "$T/s.tz"
    [ "$(grep -c '^x ' <<< "$output")" -eq 3 ]
    image-decode --size 48 -b 2 --limit 2 "$FIXTURE/folder" | tensor ls > "$T/ls"
    grep -q "^x  *u8  *\[2,3,48,48\]" "$T/ls"
}

@test "image files without a folder: labels absent or given" {
    image-decode "$FIXTURE/folder/drawings/rgb.png" "$FIXTURE/folder/Photos/420.jpg" > "$T/f.tz"
    run "$PY" "$HELPERS/streams.py" load "$T/f.tz" y 0
    assert_output "-1 -1"
    run "$PY" "$HELPERS/streams.py" strings "$T/f.tz" names
    assert_output ""
    image-decode --label 3 "$FIXTURE/folder/drawings/rgb.png" > "$T/g.tz"
    run "$PY" "$HELPERS/streams.py" load "$T/g.tz" y 0
    assert_output "3"
    run image-decode --label 3 "$FIXTURE/folder"
    assert_failure 2
}

# a folder with one class holding the good picture and the file under test
bad_folder() {
    rm -rf "$T/bad" "$T/out.tz"
    mkdir -p "$T/bad/cls"
    cp "$FIXTURE/folder/drawings/rgb.png" "$T/bad/cls/good.png"
}

expect_refused() {    # expect_refused FILE-IN-cls WHAT
    run image-decode -o "$T/out.tz" "$T/bad"
    assert_failure 1
    assert_one_line_error image-decode
    assert_output --partial "$T/bad/cls/$1: "
    assert_output --partial "$2"
    [ ! -e "$T/out.tz" ]
    run image-decode --skip-bad "$T/bad" -o "$T/out.tz"
    assert_success
    assert_line "image-decode: skipped 1 of 2 files"
    run tensor ls "$T/out.tz"
    assert_line --regexp "^x +u8 +\[1,3,32,32\]"
}

@test "bad files: one line naming the file, exit 1, nothing written; --skip-bad leaves them out, counted" {
    bad_folder; head -c 200 "$FIXTURE/folder/drawings/rgb.png" > "$T/bad/cls/truncated.png"
    expect_refused truncated.png "corrupt PNG"
    bad_folder; "$PY" - "$FIXTURE/folder/drawings/rgb.png" "$T/bad/cls/corrupt.png" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
for i in range(60, len(data) - 20, 7):
    data[i] ^= 0x5A
open(sys.argv[2], "wb").write(data)
PY
    expect_refused corrupt.png "corrupt PNG"
    bad_folder; head -c 600 "$FIXTURE/folder/Photos/420.jpg" > "$T/bad/cls/truncated.jpg"
    expect_refused truncated.jpg "truncated JPEG"
    bad_folder; printf '\377\330\377\340garbage' > "$T/bad/cls/cut.jpg"
    expect_refused cut.jpg "truncated JPEG"
    bad_folder; "$PY" - "$FIXTURE/folder/Photos/420.jpg" "$T/bad/cls/corrupt.jpg" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[data.find(b"\xff\xc0") + 4] = 3          # the frame's sample precision: 3 bits
open(sys.argv[2], "wb").write(data)
PY
    expect_refused corrupt.jpg "corrupt JPEG: Unsupported JPEG data precision 3"
    bad_folder; : > "$T/bad/cls/empty.png"
    expect_refused empty.png "an empty file"
    bad_folder; echo "hello, I am text" > "$T/bad/cls/text.jpg"
    expect_refused text.jpg "not an image (neither PNG nor JPEG)"
    bad_folder; printf 'BM\0\0\0\0' > "$T/bad/cls/old.bmp"
    expect_refused old.bmp "a BMP image: incv3 decodes PNG and JPEG only"
    bad_folder; ln -s "$T/nowhere.png" "$T/bad/cls/dangling.png"
    expect_refused dangling.png "cannot open"
    # a header that claims 100,000 x 100,000 pixels: refused before any pixel is allocated
    bad_folder; "$PY" - "$T/bad/cls/huge.png" <<'PY'
import struct, sys, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
PY
    expect_refused huge.png "100000 x 100000 pixels, over the limit of 89478485 (--max-pixels)"
    run image-decode --max-pixels 100 "$FIXTURE/folder/drawings/rgb.png"
    assert_failure 1
    assert_output --partial "40 x 30 pixels, over the limit of 100"
    # a file name with a newline is named on one line
    bad_folder; printf 'x' > "$T/bad/cls/new"$'\n'"line.png"
    run image-decode "$T/bad"
    assert_failure 1
    assert_one_line_error image-decode
    assert_output --partial 'new\nline.png: '
}

@test "bad folders: no classes, an empty class, a loop of links, a missing root" {
    mkdir -p "$T/noclass" && cp "$FIXTURE/folder/drawings/rgb.png" "$T/noclass/"
    run image-decode "$T/noclass"
    assert_failure 1
    assert_output "image-decode: $T/noclass: no class folders (an ImageFolder root holds ROOT/CLASS/IMAGE)"
    mkdir -p "$T/empty/a" "$T/empty/b" && cp "$FIXTURE/folder/drawings/rgb.png" "$T/empty/a/"
    echo text > "$T/empty/b/readme.txt"
    run image-decode "$T/empty"
    assert_failure 1
    assert_one_line_error image-decode
    assert_output --partial "class 'b' has no images"
    mkdir -p "$T/loop/cls/sub" && cp "$FIXTURE/folder/drawings/rgb.png" "$T/loop/cls/"
    ln -s .. "$T/loop/cls/sub/up"
    run image-decode -o "$T/out.tz" "$T/loop"
    assert_failure 1
    assert_one_line_error image-decode
    assert_output --partial "a loop of symbolic links"
    [ ! -e "$T/out.tz" ]
    run image-decode "$T/nowhere"
    assert_failure 1
    assert_one_line_error image-decode
    run image-decode
    assert_failure 2
    run image-decode --size 0 "$FIXTURE/folder"
    assert_failure 2
}
