#!/usr/bin/env bats
# The data as the model-zoo entry's users have it: the CIFAR python versions
# (pickles) and the downloaded tarballs, read in place by cifar-decode and the
# pipelines. The malformed pickles are in tests/reliability.bats.

load helpers/common

pickles() { "$PY" "$HELPERS/pickles.py" "$@"; }
decoded() { cifar-decode -b 250 --shuffle 7 "$@" | raw_stream /dev/stdin | sha256sum; }

@test "python versions (Python 2 cPickle, Python 3 protocols 2 to 5) decode to exactly the binary version" {
    zstd -dqc "$SAMPLE/data_batch_1.bin.zst" > "$T/d1.bin"      # real CIFAR-10 images
    want=$(decoded "$T/d1.bin")
    for form in py2 p2 p3 p4 p5 p2s p5s; do
        pickles "$form" "$T/d1.bin" "$T/$form"
        [ "$(decoded "$T/$form")" = "$want" ] || fail "$form decodes otherwise"
    done
    zstd -q "$T/py2" -o "$T/py2.zst"
    [ "$(decoded "$T/py2.zst")" = "$want" ]
    # files of both versions mix, in order
    [ "$(decoded "$T/py2" "$T/d1.bin")" = "$(decoded "$T/d1.bin" "$T/d1.bin")" ]
}

@test "CIFAR-100 python version: fine labels unless told coarse, as the binary version" {
    make_cifar "$T/c.bin" 300 cifar100
    pickles py2 "$T/c.bin" "$T/train" cifar100
    pickles p4 "$T/c.bin" "$T/train.p4" cifar100
    fine=$(decoded --cifar100 fine "$T/c.bin")
    [ "$(decoded "$T/train")" = "$fine" ]          # says CIFAR-100 itself: fine labels
    [ "$(decoded --cifar100 fine "$T/train.p4")" = "$fine" ]
    [ "$(decoded --cifar100 coarse "$T/train")" = "$(decoded --cifar100 coarse "$T/c.bin")" ]
    cifar-decode --raw "$T/train" -o "$T/raw.tz"
    head -c 300 "$T/raw.tz" | grep -aq 'format=cifar100'
    # a CIFAR-10 file where CIFAR-100 was asked for, and the other way round
    zstd -dqc "$SAMPLE/test_batch.bin.zst" > "$T/t.bin"
    pickles py2 "$T/t.bin" "$T/test_batch"
    run cifar-decode --cifar100 fine "$T/test_batch"
    assert_failure 1
    assert_one_line_error cifar-decode
    assert_output --partial "holds CIFAR-10 labels"
    run cifar-decode "$T/test_batch" "$T/train"
    assert_failure 1
    assert_output --partial "holds CIFAR-100 images, the files before it CIFAR-10 ones"
}

# tarball DIR NAME MEMBERS...: NAME.tar.gz of DIR's MEMBERS in the order given
tarball() { local dir=$1 name=$2; shift 2; tar -C "$dir" -czf "$T/$name" "$@"; }

@test "tarballs as downloaded: members streamed out equal the unpacked files, in batch order" {
    py="$T/u/cifar-10-batches-py" bin="$T/u/cifar-10-batches-bin"
    mkdir -p "$py" "$bin"
    for i in 1 2 3; do
        make_cifar "$bin/data_batch_$i.bin" $((100 + 37 * i))
        pickles py2 "$bin/data_batch_$i.bin" "$py/data_batch_$i"
    done
    make_cifar "$bin/test_batch.bin" 90
    pickles py2 "$bin/test_batch.bin" "$py/test_batch"
    printf 'airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n' > "$bin/batches.meta.txt"
    pickles meta py2 "$bin/batches.meta.txt" "$py/batches.meta"
    echo '<html></html>' > "$py/readme.html"
    # the official archives do not list the batches in order
    tarball "$T/u" py.tar.gz cifar-10-batches-py/data_batch_3 cifar-10-batches-py/readme.html \
        cifar-10-batches-py/test_batch cifar-10-batches-py/data_batch_1 cifar-10-batches-py/batches.meta \
        cifar-10-batches-py/data_batch_2
    tarball "$T/u" bin.tar.gz cifar-10-batches-bin/test_batch.bin cifar-10-batches-bin/data_batch_2.bin \
        cifar-10-batches-bin/batches.meta.txt cifar-10-batches-bin/data_batch_1.bin cifar-10-batches-bin/data_batch_3.bin
    want=$(decoded "$bin"/data_batch_{1,2,3}.bin)
    [ "$(decoded "$T/py.tar.gz")" = "$want" ]
    [ "$(decoded --split train "$T/bin.tar.gz")" = "$want" ]
    [ "$(decoded --split test "$T/py.tar.gz")" = "$(decoded "$bin/test_batch.bin")" ]
    tar -C "$T/u" -cf - cifar-10-batches-bin | zstd -q > "$T/bin.tar.zst"
    [ "$(decoded "$T/bin.tar.zst")" = "$want" ]
    # through a pipe: nothing read to tell what it is may be lost
    [ "$(decoded <(cat "$T/py.tar.gz"))" = "$want" ]
    [ "$(decoded - < "$T/bin.tar.gz")" = "$want" ]
    [ "$(decoded <(cat "$bin/data_batch_1.bin") "$bin/data_batch_2.bin" "$bin/data_batch_3.bin")" = "$want" ]
    # CIFAR-100's binary version: the archive says CIFAR-100, fine labels
    mkdir -p "$T/u/cifar-100-binary"
    make_cifar "$T/u/cifar-100-binary/train.bin" 200 cifar100
    make_cifar "$T/u/cifar-100-binary/test.bin" 50 cifar100
    tarball "$T/u" c100.tar.gz cifar-100-binary/test.bin cifar-100-binary/train.bin
    [ "$(decoded "$T/c100.tar.gz")" = "$(decoded --cifar100 fine "$T/u/cifar-100-binary/train.bin")" ]
    [ "$(decoded --cifar100 coarse --split test "$T/c100.tar.gz")" = \
      "$(decoded --cifar100 coarse "$T/u/cifar-100-binary/test.bin")" ]
    # nothing was unpacked beside the archives
    [ -z "$(find "$T" -maxdepth 1 -newer "$T/c100.tar.gz" ! -name '*.tar.*')" ]
    # class names from the text, the pickle, or the archive itself
    "$PY" - "$T/l.tz" <<'PYEOF'
import sys, numpy as np
sys.path.insert(0, "tests/helpers")
from streams import record, END
logits = np.eye(10, dtype=np.float32) * 5
open(sys.argv[1], "wb").write(record("logits", logits) + record("y", np.arange(10)) + END)
PYEOF
    for names in "$bin/batches.meta.txt" "$py/batches.meta" "$T/py.tar.gz" "$T/bin.tar.gz"; do
        run evaluate --names "$names" "$T/l.tz"
        assert_success
        assert_line --regexp "^  truck +100.00%"
    done
    run cifar-decode "$T/u/cifar-10-batches-py/readme.html"
    assert_failure 1
    run cifar-decode --split test "$T/c100.tar.gz" "$T/py.tar.gz"
    assert_failure 1
    assert_one_line_error cifar-decode
    tar -C "$T/u" -czf "$T/empty.tar.gz" cifar-10-batches-py/readme.html
    run cifar-decode "$T/empty.tar.gz"
    assert_failure 1
    assert_output "cifar-decode: $T/empty.tar.gz: no training batches in the archive (data_batch_N or train)"
}

@test "the seed's own command line: run_incv3 --dataset_path holding cifar-10-batches-py, or a tarball" {
    mkdir -p "$T/dataset/cifar10/cifar-10-batches-py"
    zstd -dqc "$SAMPLE/data_batch_1.bin.zst" | head -c $((3073 * 256)) > "$T/d.bin"
    zstd -dqc "$SAMPLE/test_batch.bin.zst" | head -c $((3073 * 100)) > "$T/t.bin"
    pickles py2 "$T/d.bin" "$T/dataset/cifar10/cifar-10-batches-py/data_batch_1"
    pickles py2 "$T/t.bin" "$T/dataset/cifar10/cifar-10-batches-py/test_batch"
    printf 'airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n' > "$T/names.txt"
    pickles meta py2 "$T/names.txt" "$T/dataset/cifar10/cifar-10-batches-py/batches.meta"
    cd "$T"
    run run_incv3 --model_name inceptionv3 --dataset_path ./dataset/cifar10 --batch_size 64 --epoch 1 \
        --lr 0.1 --device cpu --autocast False -- --width 0.125 --run py-run
    assert_success
    grep -q '"event":"epoch","epoch":0,' py-run/log.jsonl
    grep -q '"images":100,' py-run/eval.json
    # the same data as a tarball, given to train
    tar -C dataset/cifar10 -czf c10.tar.gz cifar-10-batches-py
    train --data c10.tar.gz --width 0.125 --batch 64 --epochs 1 --lr 0.1 --run tar-run
    incv3-ckpt export py-run/last.ckpt a.st
    incv3-ckpt export tar-run/last.ckpt b.st
    cmp a.st b.st
}
