#!/usr/bin/env bats
# Extreme but well-formed inputs, special files, signals: each class of what a
# hostile user can hand the tools, with cases of our own per class. Under
# make check-asan these run with AddressSanitizer and UBSan too.

load helpers/common

# "${with_default_signals[@]}" CMD...: CMD with SIGINT and SIGTERM as a terminal gives
# them (a script's background jobs start with SIGINT ignored, and an ignored signal
# stays so); an exec, so that $! is CMD's own process
with_default_signals=("$PY" -c "import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])")

# stream FILE PYTHON-EXPR: writes the records the expression builds (header, record, END)
stream() {
    "$PY" - "$1" "$2" <<'PYEOF'
import sys
import numpy as np
sys.path.insert(0, "tests/helpers")
from streams import header, record, END
open(sys.argv[1], "wb").write(eval(sys.argv[2]))
PYEOF
}

# fails_fast CMD...: exit 1, one line naming the tool, within 10 s and 300 MB
fails_fast() {
    run /usr/bin/time -f "%M" -o "$T/rss" timeout 10 "$@"
    [ "$status" -eq 1 ] || fail "$*: exit $status: $output"
    [ "$(printf '%s\n' "$output" | grep -c .)" -eq 1 ] || fail "$*: not one line: $output"
    [ "$(tail -n 1 "$T/rss")" -lt 300000 ] || fail "$*: $(tail -n 1 "$T/rss") kB resident"
}

@test "memory safety: .npy digits to the end of the buffer, zero-length arrays, dims past 2^62, empty batches" {
    # a header whose shape digits run to the end of what was read, compressed
    printf '\x93NUMPY\x01\x00\x20\x00{"descr": "<f4", "shape": (1234567' > "$T/digits.npy"
    zstd -q "$T/digits.npy" -o "$T/digits.npy.zst"
    for f in "$T/digits.npy" "$T/digits.npy.zst"; do
        run tensor import x "$f" -o "$T/out.tz"
        assert_failure 1
        assert_one_line_error tensor
    done
    "$PY" -c "import numpy as np; np.save('$T/empty.npy', np.zeros((0, 3), np.float32))"
    tensor import x "$T/empty.npy" -o "$T/empty.tz"
    tensor export x -o "$T/back.npy" "$T/empty.tz"
    "$PY" -c "import numpy as np; a = np.load('$T/back.npy'); assert a.shape == (0, 3) and a.dtype == np.float32"
    # element counts that overflow in signed arithmetic, though the product is 0
    stream "$T/big.tz" "header('x', 1, (2**62, 3, 0)) + END"
    run tensor ls "$T/big.tz"
    assert_success
    stream "$T/over.tz" "header('x', 1, (2**62, 4, 1)) + END"
    run bash -c "tensor ls '$T/over.tz' > /dev/null"
    assert_failure 1
    assert_one_line_error tensor
    # a batch of no images through every stage
    stream "$T/none.tz" "record('x', np.zeros((0, 3, 32, 32), np.uint8)) + record('y', np.zeros(0, np.int64)) + END"
    augment --crop 4 --flip --rotate 15 "$T/none.tz" -o "$T/none2.tz"
    run tensor ls "$T/none2.tz"
    assert_line --regexp '^x +u8 +\[0,3,32,32\]'
    augment --normalize cifar10 "$T/none.tz" -o "$T/none3.tz"
    # a checkpoint whose config record is empty (found by the checkpoint fuzzer)
    stream "$T/empty.ckpt" "header('incv3.checkpoint', 1, (0,)) + END"
    run incv3-step -c "$T/empty.ckpt" --log /dev/null "$T/none.tz"
    assert_failure 1
    assert_one_line_error incv3-step
}

@test "memory follows the data: /dev/zero, lying headers and huge claims fail at once with the limit named" {
    fails_fast cifar-decode /dev/zero
    assert_output --partial "not a file"
    fails_fast tensor import x /dev/zero
    fails_fast incv3-ckpt import /dev/zero -o "$T/m.ckpt"
    [ ! -e "$T/m.ckpt" ]
    stream "$T/l.tz" "record('logits', np.eye(10, dtype=np.float32)) + record('y', np.arange(10)) + END"
    fails_fast evaluate --names /dev/zero "$T/l.tz"
    # a checkpoint whose first record claims a model of 1.2 billion parameters
    stream "$T/huge.ckpt" "record('incv3.checkpoint', np.frombuffer(b'classes=100000\nwidth=4\naux=0\nstep=0\nseed=0\n', np.uint8)) + END"
    fails_fast incv3-step -c "$T/huge.ckpt" --log /dev/null "$T/l.tz"
    assert_output --partial "over the 400 million"
    # safetensors whose metadata says width 4 but whose tensors are a few bytes
    "$PY" - "$T/w4.safetensors" <<'PYEOF'
import json, struct, sys
h = json.dumps({"__metadata__": {"incv3.width": "4"},
                "linear.weight": {"dtype": "F32", "shape": [10, 8192], "data_offsets": [0, 327680]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + bytes(327680))
PYEOF
    fails_fast incv3-ckpt import "$T/w4.safetensors" -o "$T/m.ckpt"
    assert_output --partial "a model of 10 classes at width 4 needs"
    # 100,000 classes: no 80 GB confusion matrix, one image's worth of memory
    stream "$T/k.tz" "record('logits', np.zeros((2, 100000), np.float32)) + record('y', np.array([5, 99999])) + END"
    run /usr/bin/time -f "%M" -o "$T/rss" evaluate --json "$T/k.tz"
    assert_success
    [ "$(tail -n 1 "$T/rss")" -lt 100000 ]
    [[ "$output" != *confusion* ]]
    # a PNG grid larger than any screen
    stream "$T/img.tz" "record('x', np.zeros((1, 3, 1024, 1024), np.uint8)) + END"
    fails_fast tensor png --scale 16 -o "$T/big.png" "$T/img.tz"
    assert_output --partial "64 megapixels"
    [ ! -e "$T/big.png" ]
}

@test "no hangs: 2^40 images of nothing, absurd epoch and worker counts, a thousand threads" {
    stream "$T/nothing.tz" "header('x', 1, (2**40, 3, 0, 0)) + header('x', 1, (1, 2**40, 0, 0)) + END"
    run timeout 10 augment --crop 4 --flip --rotate 15 "$T/nothing.tz" -o "$T/out.tz"
    assert_success
    run tensor ls "$T/out.tz"
    assert_line --regexp "^x +u8 +\[1099511627776,3,0,0\]"
    run timeout 10 train --data "$SAMPLE" --epochs 147573952589676412928 --run "$T/r"
    assert_failure 2
    assert_output --partial "train: --epochs must be a whole number from 1 to"
    run timeout 10 train --data "$SAMPLE" --workers 257 --run "$T/r"
    assert_failure 2
    run timeout 10 train --data "$SAMPLE" --epochs 0 --run "$T/r"
    assert_failure 2
    [[ "$output" != *tail* ]]
    run timeout 10 incv3-step -c "$T/m.ckpt" --threads 1024
    assert_failure 2
    assert_one_line_error incv3-step
}

@test "outputs onto special files: FIFOs, links and devices are written in place, never replaced" {
    data="$SAMPLE/test_batch.bin.zst"
    # a FIFO: its reader gets the stream, and it stays a FIFO
    mkfifo "$T/fifo"
    tensor ls "$T/fifo" > "$T/ls" &
    cifar-decode -b 10 --limit 20 "$data" -o "$T/fifo"
    wait $!
    [ -p "$T/fifo" ]
    grep -q '^x ' "$T/ls"
    # a symbolic link: stays a link, its target gets the data
    echo old > "$T/target"
    ln -s target "$T/link"
    cifar-decode -b 10 --limit 20 "$data" -o "$T/link"
    [ -L "$T/link" ]
    run tensor ls "$T/link"
    assert_success
    cifar-decode -b 10 --limit 20 "$data" -o "$T/want.tz"
    cmp "$T/target" "$T/want.tz"
    # a dangling link is created through, too
    ln -s made "$T/dangling"
    augment --flip "$T/want.tz" -o "$T/dangling"
    [ -L "$T/dangling" ] && [ -f "$T/made" ]
    # a character device: written to, left alone
    cifar-decode -b 10 --limit 20 "$data" -o /dev/null
    [ -c /dev/null ]
    tensor export x -o /dev/null "$T/want.tz"
    [ -c /dev/null ]
    [ -z "$(find "$T" -name '*.tmp.*')" ]
}

@test "signals: SIGINT or SIGTERM leaves no temporary file and says nothing was written; stale ones are removed" {
    cifar-decode -b 10 --limit 20 "$SAMPLE/test_batch.bin.zst" --raw -o "$T/in.tz"
    for sig in INT TERM; do
        mkfifo "$T/slow"
        # the input stays open, so the tool is mid-write when the signal comes
        (head -c 1000 "$T/in.tz"; sleep 30) > "$T/slow" &
        feeder=$!
        "${with_default_signals[@]}" augment --flip "$T/slow" -o "$T/out.tz" 2> "$T/err" &
        pid=$!
        until ls "$T"/out.tz.tmp.* >/dev/null 2>&1; do sleep 0.05; done
        kill -$sig $pid
        status=0
        wait $pid || status=$?
        kill $feeder 2>/dev/null || true
        rm -f "$T/slow"
        [ "$status" -gt 128 ] || fail "$sig: exit $status"
        [ -z "$(find "$T" -name 'out.tz*')" ] || fail "$sig: left $(ls "$T")"
        grep -q "^augment: interrupted by SIG$sig; nothing was written$" "$T/err"
    done
    # the evaluation's output likewise
    incv3-ckpt init --width 0.125 -o "$T/m.ckpt"
    mkfifo "$T/slow"
    (head -c 1000 "$T/in.tz"; sleep 30) > "$T/slow" &
    feeder=$!
    "${with_default_signals[@]}" incv3-step --eval -c "$T/m.ckpt" -o "$T/logits.tz" "$T/slow" 2> "$T/err" &
    pid=$!
    until ls "$T"/logits.tz.tmp.* >/dev/null 2>&1; do sleep 0.05; done
    kill -TERM $pid
    wait $pid || true
    kill $feeder 2>/dev/null || true
    [ -z "$(find "$T" -name 'logits.tz*')" ]
    # SIGKILL cannot be caught: the next run of the same output removes what a dead
    # writer left, and leaves a live writer's file alone
    sleep 0.1 & dead=$!; wait $dead
    touch "$T/out.tz.tmp.$dead" "$T/out.tz.tmp.$$"
    augment --flip "$T/in.tz" -o "$T/out.tz"
    [ ! -e "$T/out.tz.tmp.$dead" ]
    [ -e "$T/out.tz.tmp.$$" ]
}

@test "no silent acceptance: NaN logits give valid JSON, trailing logits and long idx records are errors" {
    empty="record('logits', np.zeros((0, 3), np.float32)) + record('y', np.zeros(0, np.int64))"
    stream "$T/nan.tz" "record('logits', np.array([[np.nan, 1, 2], [0, 5, 1]], np.float32)) + record('y', np.array([1, 1])) + $empty + END"
    run evaluate --json "$T/nan.tz"
    assert_success
    "$PY" -c "import json, sys; d = json.loads(sys.argv[1]); assert d['loss'] is None and d['nonfinite'] == 1 and d['images'] == 2, d" "$output"
    # an empty batch does not make the loss NaN
    stream "$T/ok.tz" "record('logits', np.array([[0, 5, 1]], np.float32)) + record('y', np.array([1])) + $empty + END"
    run evaluate --json "$T/ok.tz"
    "$PY" -c "import json, sys; d = json.loads(sys.argv[1]); assert 0 < d['loss'] < 0.1, d" "$output"
    stream "$T/trail.tz" "record('logits', np.zeros((1, 3), np.float32)) + record('y', np.array([1])) + record('logits', np.zeros((1, 3), np.float32)) + END"
    run evaluate "$T/trail.tz"
    assert_failure 1
    assert_one_line_error evaluate
    assert_output --partial "has no y after it"
    # an idx record longer than its batch
    stream "$T/idx.tz" "record('idx', np.arange(9)) + record('x', np.zeros((8, 3, 32, 32), np.uint8)) + record('y', np.zeros(8, np.int64)) + END"
    run incv3-step -c "$T/m.ckpt" --width 0.125 --log /dev/null "$T/idx.tz"
    assert_failure 1
    assert_one_line_error incv3-step
    [ ! -e "$T/m.ckpt" ]
    # --mpi outside mpirun: train's own usage error
    run env -u OMPI_COMM_WORLD_SIZE train --mpi --data "$SAMPLE" --run "$T/r"
    assert_failure 2
    assert_output --partial "train: --mpi is for the ranks of an mpirun job"
    # an evaluation that fails leaves no eval.json.tmp behind
    mkdir "$T/data"
    zstd -dqc "$SAMPLE/data_batch_1.bin.zst" | head -c $((3073 * 64)) > "$T/data/data_batch_1.bin"
    head -c 5000 /dev/urandom > "$T/data/test_batch.bin"
    run train --data "$T/data" --width 0.125 --batch 32 --epochs 1 --run "$T/r"
    assert_failure 1
    assert_line "train: epoch 0: the evaluation failed"
    [ -z "$(find "$T/r" -name '*.tmp*')" ]
}

@test "corrupt zstd frames without checksums: caught wherever the stream's structure changes" {
    cifar-decode -b 10 --limit 20 --raw "$SAMPLE/test_batch.bin.zst" -o "$T/raw.tz"
    zstd -q --no-check "$T/raw.tz" -o "$T/nc.zst"
    tensor ls "$T/nc.zst" | awk '{ print $2, $3, $4 }' > "$T/want"
    size=$(stat -c %s "$T/nc.zst")
    # every bit of the frame header and the first blocks, and of the end
    for off in $(seq 0 40) $(seq $((size - 24)) $((size - 1))); do
        for bit in 0 3 6; do
            "$PY" -c "
import sys; d = bytearray(open('$T/nc.zst', 'rb').read()); d[$off] ^= 1 << $bit
open('$T/bad.zst', 'wb').write(d)"
            status=0
            tensor ls "$T/bad.zst" > "$T/got" 2> "$T/err" || status=$?
            if [ $status -eq 0 ]; then
                awk '{ print $2, $3, $4 }' "$T/got" | cmp -s - "$T/want" || fail "byte $off bit $bit: accepted a changed structure"
            else
                [ $status -eq 1 ] && [ "$(wc -l < "$T/err")" -eq 1 ] || fail "byte $off bit $bit: exit $status $(cat "$T/err")"
            fi
        done
    done
}

@test "command-line conventions: usage errors exit 2, --help works everywhere, output errors exit 1" {
    run tensor ls --unknown
    assert_failure 2
    assert_one_line_error tensor
    run tensor ls --help
    assert_success
    assert_line --partial "usage: tensor ls"
    for tool in cifar-decode augment tensor incv3-step evaluate incv3-ckpt allreduce-merge; do
        for opt in --help --version; do
            run bash -c "$tool $opt > /dev/full"
            [ "$status" -eq 1 ] || fail "$tool $opt > /dev/full: exit $status"
            assert_one_line_error "$tool"
        done
    done
    stream "$T/img.tz" "record('x', np.zeros((4, 3, 32, 32), np.uint8)) + END"
    run tensor png -o /dev/full "$T/img.tz"
    assert_failure 1
    assert_one_line_error tensor
    assert_output --partial "cannot write /dev/full"
}
