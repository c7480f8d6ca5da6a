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

@test "class names travel with a model: checkpoints, safetensors, incv3-step --eval, evaluate" {
    incv3-ckpt import "$ROOT/models/incv3-cifar10-w025.safetensors" -o "$T/m.ckpt"
    run incv3-ckpt info "$T/m.ckpt"
    assert_line "class_names airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck"
    # without the data at hand: the model's names reach evaluate through the stream
    cifar-decode -b 100 --limit 200 "$SAMPLE/test_batch.bin.zst" | incv3-step --eval -c "$T/m.ckpt" > "$T/l.tz"
    run evaluate "$T/l.tz"
    assert_line --regexp "^  airplane +[0-9.]+%"
    assert_line --regexp "^  truck +[0-9.]+%"
    # a round trip keeps them; --names sets them; a file of the wrong count is refused
    printf 'a%d\n' 0 1 2 3 4 5 6 7 8 9 > "$T/names.txt"
    incv3-ckpt export --names "$T/names.txt" "$T/m.ckpt" "$T/w.safetensors"
    incv3-ckpt import "$T/w.safetensors" -o "$T/m2.ckpt"
    run incv3-ckpt info "$T/m2.ckpt"
    assert_line "class_names a0, a1, a2, a3, a4, a5, a6, a7, a8, a9"
    printf 'a\nb\n' > "$T/two.txt"
    run incv3-ckpt import "$T/w.safetensors" -o "$T/m3.ckpt" --names "$T/two.txt"
    assert_failure 1
    assert_output --partial "2 class names for a model of 10 classes"
    [ ! -e "$T/m3.ckpt" ]
    # a new classifier has no names until the data gives them
    incv3-ckpt import "$T/w.safetensors" -o "$T/m4.ckpt" --reinit-classifier --classes 3
    run incv3-ckpt info "$T/m4.ckpt"
    refute_output --partial class_names
    # data whose classes are not the model's is refused in evaluation
    run bash -c "image-decode '$FIXTURE/folder' | incv3-step --eval -c '$T/m.ckpt' > /dev/null"
    assert_failure 1
    assert_output --partial "3 classes in the data, 10 in the model"
    run bash -c "image-decode '$FIXTURE/cifar/val' | incv3-step --eval -c '$T/m2.ckpt' > /dev/null"
    assert_failure 1
    assert_output --partial "the data's class 0 is 'airplane', the model's 'a0'"
}

@test "predict: each picture's top classes from the shipped model; the labels of a test set where it is right" {
    run predict "$FIXTURE/cifar/val/cat/0000.png"
    assert_success
    assert_output --regexp "^$FIXTURE/cifar/val/cat/0000.png: [a-z]+ [0-9.]+%(, [a-z]+ [0-9.]+%){4}$"
    # the same top-1 as scoring the folder, and right as often as that says
    files=("$FIXTURE"/cifar/val/*/*)
    predict --top 1 "${files[@]}" > "$T/pred.txt"
    [ "$(wc -l < "$T/pred.txt")" -eq 60 ]
    right=0
    while IFS= read -r line; do
        path=${line%%: *} guess=${line##*: }
        class=$(basename "$(dirname "$path")") guess=${guess%% *}
        [ "$class" = "$guess" ] && right=$((right + 1))
    done < "$T/pred.txt"
    incv3-ckpt import "$ROOT/models/incv3-cifar10-w025.safetensors" -o "$T/m.ckpt"
    image-decode -b 500 "$FIXTURE/cifar/val" | incv3-step --eval -c "$T/m.ckpt" | evaluate --json > "$T/eval.json"
    top1=$(sed 's/.*"top1":\([0-9.]*\).*/\1/' "$T/eval.json")
    [ "$(awk -v r="$right" 'BEGIN { printf "%.6f", r / 60 }')" = "$top1" ]
    [ "$right" -ge 42 ]                     # the model's 86% on CIFAR-10, give or take 60 images
    # JSON, probabilities summing to 1 over every class, a missing model, a bad file
    predict --json --top 10 "$FIXTURE/cifar/val/dog/0012.png" > "$T/p.json"
    "$PY" -c "import json, sys; o = json.load(open('$T/p.json')); assert abs(sum(c['p'] for c in o['top']) - 1) < 1e-6, o"
    run predict --model "$T/none.safetensors" "$FIXTURE/cifar/val/dog/0012.png"
    assert_failure 1
    echo text > "$T/text.png"
    run predict "$T/text.png"
    assert_failure 1
    assert_output --partial "image-decode: $T/text.png: not an image"
    run predict
    assert_failure 2
}

@test "train on an ImageFolder of PNG and JPEG: classes from the folders, names in the model and its evaluation" {
    train --data "$FIXTURE/cifar" --width 0.0625 --batch 30 --epochs 2 --run "$T/run" 2> "$T/err"
    grep -q "^train: epoch 2/2: " "$T/err"
    run incv3-ckpt info "$T/run/last.ckpt"
    assert_line "classes 10"
    assert_line "class_names airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck"
    grep -q '"images":60,' "$T/run/eval.json"
    image-decode -b 60 "$FIXTURE/cifar/val" | incv3-step --eval -c "$T/run/best.ckpt" | evaluate > "$T/table"
    grep -q "^  horse " "$T/table"
    run predict --model "$T/run/best.ckpt" "$FIXTURE/cifar/val/ship/0018.jpg"
    assert_success
    run train --data "$FIXTURE/cifar" --classes 20 --run "$T/run2"
    assert_failure 2
    assert_output --partial "--classes 20, but $FIXTURE/cifar/train holds 10 class folders"
}

@test "installed: incv3-predict finds its tools and the shipped model" {
    make -s -C "$ROOT" BUILD="${INCV3_BUILD:-build}" install DESTDIR="$T/root" PREFIX=/usr > /dev/null
    [ -f "$T/root/usr/share/incv3/incv3-cifar10-w025.safetensors" ]
    [ -f "$T/root/usr/share/man/man1/incv3-predict.1" ]
    run env PATH="$T/root/usr/bin:/usr/bin:/bin" "$T/root/usr/bin/incv3-predict" --top 1 "$FIXTURE/cifar/val/horse/0013.png"
    assert_success
    assert_output --regexp "^$FIXTURE/cifar/val/horse/0013.png: [a-z]+ [0-9.]+%$"
}
