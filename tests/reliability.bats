#!/usr/bin/env bats
# Bad input never crashes anything; a crash never loses work. The malformed corpus
# lives in tests/corpus/ (tests/corpus/make_corpus.py writes it).

load helpers/common

CORPUS="$ROOT/tests/corpus"

# expect_clean_failure TOOL OUTPUT-FILE CMD...: one line naming the tool, exit 1,
# no output file, no temporary file left
expect_clean_failure() {
    local tool=$1 out=$2; shift 2
    run "$@"
    [ "$status" -eq 1 ] || fail "$*: exit $status: $output"
    [ "$(printf '%s\n' "$output" | grep -c .)" -eq 1 ] || fail "$*: not one line: $output"
    [[ "$output" == "$tool: "* ]] || fail "$*: $output"
    [ ! -e "$out" ] || fail "$*: left $out"
    [ -z "$(find "$(dirname "$out")" -name '*.tmp.*')" ] || fail "$*: left a temporary file"
}

@test "every malformed stream: one line, exit 1, no output file" {
    count=0
    for f in "$CORPUS"/stream/*.tz; do
        expect_clean_failure augment "$T/out.tz" augment "$f" -o "$T/out.tz"
        expect_clean_failure tensor "$T/none" bash -c "tensor ls '$f' > /dev/null"
        expect_clean_failure incv3-step "$T/m.ckpt" incv3-step -c "$T/m.ckpt" --width 0.125 --log /dev/null "$f"
        count=$((count + 1))
    done
    echo "$count malformed streams" >&3
    [ "$count" -ge 16 ]
}

@test "every malformed CIFAR file: one line naming it, exit 1, no output file" {
    for f in "$CORPUS"/cifar/*.bin; do
        expect_clean_failure cifar-decode "$T/out.tz" cifar-decode "$f" -o "$T/out.tz"
        [[ "$output" == *"$(basename "$f")"* ]] || fail "does not name $f: $output"
    done
    expect_clean_failure cifar-decode "$T/out.tz" \
        cifar-decode --cifar100 fine "$CORPUS/cifar100/fine-label-out-of-range.bin" -o "$T/out.tz"
    assert_output --partial "fine label 100"
}

@test "every malformed pickle (forbidden globals, lies, bombs, truncations): one line with its byte, exit 1" {
    count=0
    for f in "$CORPUS"/pickle/*.pkl; do
        expect_clean_failure cifar-decode "$T/out.tz" cifar-decode "$f" -o "$T/out.tz"
        [[ "$output" == "cifar-decode: $f: "* ]] || fail "does not name $f: $output"
        case "$(basename "$f")" in
        meta-not-batch.pkl) ;;
        *) [[ "$output" == *": byte "[0-9]*": "* ]] || fail "no byte offset: $output" ;;
        esac
        count=$((count + 1))
    done
    echo "$count malformed pickles" >&3
    [ "$count" -ge 40 ]
    run cifar-decode "$CORPUS/pickle/global-os-system.pkl"
    assert_output "cifar-decode: $CORPUS/pickle/global-os-system.pkl: byte 2: global 'os.system' is not allowed (only NumPy's array rebuilders)"
    # the same as a class-names file
    "$PY" -c "
import sys; sys.path.insert(0, '$HELPERS')
from streams import record, END
import numpy as np
open('$T/l.tz', 'wb').write(record('logits', np.eye(10, dtype=np.float32)) + record('y', np.arange(10)) + END)"
    run evaluate --names "$CORPUS/pickle/global-os-system.pkl" "$T/l.tz"
    assert_failure 1
    assert_one_line_error evaluate
    assert_output --partial "global 'os.system' is not allowed"
}

@test "every malformed safetensors file: one line, exit 1, no checkpoint" {
    count=0
    for f in "$CORPUS"/safetensors/*.safetensors; do
        expect_clean_failure incv3-ckpt "$T/m.ckpt" incv3-ckpt import "$f" --width 0.0625 -o "$T/m.ckpt"
        count=$((count + 1))
    done
    [ "$count" -ge 15 ]
    run incv3-ckpt import "$CORPUS/safetensors/missing-tensors.safetensors" --width 0.0625 -o "$T/m.ckpt"
    assert_output --partial "missing tensor"
    run incv3-ckpt import "$CORPUS/safetensors/extra-tensor.safetensors" --width 0.0625 -o "$T/m.ckpt"
    assert_output --partial "unexpected tensor 'bogus.weight'"
    run incv3-ckpt import "$CORPUS/safetensors/unknown-dtype.safetensors" --width 0.0625 -o "$T/m.ckpt"
    assert_output --partial "unsupported dtype 'F16'"
}

@test "checkpoints of another width or class count, or damaged, are refused" {
    incv3-ckpt init --width 0.125 -o "$T/w.ckpt"
    # a config that claims 100 classes over tensors made for 10
    "$PY" - "$T/w.ckpt" "$T/lie.ckpt" <<'PYEOF'
import sys, subprocess
data = subprocess.run(["zstd", "-dc", sys.argv[1]], capture_output=True, check=True).stdout
open(sys.argv[2], "wb").write(data.replace(b"classes=10\n", b"classes=99\n", 1))
PYEOF
    expect_clean_failure incv3-step "$T/none.tz" incv3-step --eval -c "$T/lie.ckpt" -o "$T/none.tz" /dev/null
    assert_output --partial "linear.weight"
    # cut short: the end is missing
    head -c 100000 "$T/w.ckpt" > "$T/cut.ckpt"
    expect_clean_failure incv3-ckpt "$T/none.st" incv3-ckpt export "$T/cut.ckpt" "$T/none.st"
    # importing weights of width 0.125 as width 0.25
    incv3-ckpt export "$T/w.ckpt" "$T/w.safetensors"
    expect_clean_failure incv3-ckpt "$T/b.ckpt" incv3-ckpt import --width 0.25 "$T/w.safetensors" -o "$T/b.ckpt"
    # labels beyond a 10-class checkpoint
    make_cifar "$T/c.bin" 4 cifar100
    expect_clean_failure incv3-step "$T/w2.ckpt" bash -c "cifar-decode --cifar100 fine '$T/c.bin' | incv3-step -c '$T/w.ckpt' --no-save --log /dev/null"
}

@test "SIGKILL at random moments, checkpoint writes included: the last checkpoint is always whole and the run ends with the same weights" {
    opts=(--data "$SAMPLE" --width 0.125 --batch 16 --limit 160 --test-limit 32 --epochs 2 --save-every 1)
    train "${opts[@]}" --run "$T/whole" > /dev/null
    kills=0
    for delay in 0.7 1.3 0.9 1.9 0.4 1.1 1.6 0.8; do
        train "${opts[@]}" --run "$T/cut" > /dev/null 2>&1 &
        pid=$!
        sleep "$delay"
        pkill -9 -P $pid 2>/dev/null || true
        kill -9 $pid 2>/dev/null || true
        pkill -9 -f "incv3-step -c $T/cut" 2>/dev/null || true
        wait $pid 2>/dev/null || true
        kills=$((kills + 1))
        if [ -e "$T/cut/last.ckpt" ]; then
            run incv3-ckpt info "$T/cut/last.ckpt"
            [ "$status" -eq 0 ] || fail "after kill $kills: $output"
        fi
        rm -f "$T"/cut/*.tmp.*          # what a killed writer leaves is never read
    done
    train "${opts[@]}" --run "$T/cut" > /dev/null
    incv3-ckpt export "$T/whole/last.ckpt" "$T/a.st"
    incv3-ckpt export "$T/cut/last.ckpt" "$T/b.st"
    cmp "$T/a.st" "$T/b.st"
    echo "$kills kills, then the same weights" >&3
}

@test "a resumed epoch's epoch_seconds is its wall time across the kill, not only the part after it" {
    opts=(--data "$SAMPLE" --width 0.125 --batch 16 --limit 640 --test-limit 32 --epochs 1 --save-every 1 --threads 1)
    train "${opts[@]}" --run "$T/cut" > /dev/null 2>&1 &
    pid=$!
    # steps for at least 3 s of clock time, then a kill
    clock() { sed -n "s/.*\"event\":\"$1\".*\"time\":\([0-9.]*\).*/\1/p" "$T/cut/log.jsonl" 2> /dev/null | tail -n 1; }
    for _ in $(seq 300); do
        started=$(clock run) last=$(clock step)
        [ -n "$started" ] && [ -n "$last" ] && awk -v a="$started" -v b="$last" 'BEGIN { exit !(b - a >= 3) }' && break
        sleep 0.1
    done
    pkill -9 -P $pid 2>/dev/null || true
    kill -9 $pid 2>/dev/null || true
    pkill -9 -f "incv3-step -c $T/cut" 2>/dev/null || true
    wait $pid 2>/dev/null || true
    ! grep -q '"event":"epoch"' "$T/cut/log.jsonl" || skip "the epoch ended before the kill"
    before=$(clock step)
    before=$(awk -v a="$started" -v b="$before" 'BEGIN { print b - a }')
    train "${opts[@]}" --run "$T/cut" > /dev/null 2>&1
    resumed=$(clock run) ended=$(clock epoch)
    seconds=$(sed -n 's/.*"event":"epoch".*"epoch_seconds":\([0-9]*\).*/\1/p' "$T/cut/log.jsonl")
    # the part before the kill plus the part after it, each to the clock's second
    awk -v s="$seconds" -v b="$before" -v a="$((ended - ${resumed%.*}))" \
        'BEGIN { exit !(s >= b + a - 2 && s <= b + a + 2) }' \
        || fail "epoch_seconds $seconds: ${before}s before the kill and $((ended - ${resumed%.*}))s after"
}

@test "disk full while writing: a clear error, exit 1, the previous checkpoint intact" {
    cifar-decode -b 16 --limit 32 "$SAMPLE/data_batch_1.bin.zst" -o "$T/d.tz"
    incv3-step -c "$T/m.ckpt" --width 0.125 --log /dev/null "$T/d.tz"
    cp "$T/m.ckpt" "$T/before.ckpt"
    cifar-decode -b 16 --limit 32 --epoch 1 "$SAMPLE/data_batch_1.bin.zst" -o "$T/e1.tz"
    # a file-size limit makes writes fail with EFBIG, as a full disk fails them with ENOSPC
    run bash -c "trap '' XFSZ; ulimit -f 200; incv3-step -c '$T/m.ckpt' --log /dev/null '$T/e1.tz'"
    assert_failure 1
    assert_one_line_error incv3-step
    assert_output --partial "cannot write $T/m.ckpt"
    cmp "$T/m.ckpt" "$T/before.ckpt"
    [ -z "$(find "$T" -name '*.tmp.*')" ]
    run bash -c "cifar-decode -b 16 --limit 32 '$SAMPLE/data_batch_1.bin.zst' > /dev/full"
    assert_failure 1
    assert_one_line_error cifar-decode
    assert_output --partial "No space left"
}

@test "unwritable paths: a clear error naming them, exit 1" {
    cifar-decode -b 16 --limit 32 "$SAMPLE/data_batch_1.bin.zst" -o "$T/d.tz"
    for path in /nonexistent/dir/out /dev/null/sub; do
        expect_clean_failure augment "$path" augment "$T/d.tz" -o "$path"
        assert_output --partial "$path"
        run incv3-step -c "$path.ckpt" --width 0.125 --log /dev/null "$T/d.tz"
        assert_failure 1
        assert_one_line_error incv3-step
    done
    run incv3-step -c "$T/m.ckpt" --width 0.125 --log /nonexistent/log "$T/d.tz"
    assert_failure 1
    assert_one_line_error incv3-step
}

@test "a failing stage fails the pipeline: no stage takes a truncated stream for a clean end" {
    run train --data "$SAMPLE" --width 0.125 --batch 16 --limit 64 --epochs 1 --run "$T/r" --augment false
    assert_failure
    assert_output --partial "incv3-step: stdin: empty stream"
    run train --data "$SAMPLE" --width 0.125 --batch 16 --limit 64 --epochs 1 --run "$T/r2" \
        --augment "head -c 50000"
    assert_failure
    assert_output --partial "incv3-step: stdin:"
    [ ! -e "$T/r2/last.ckpt" ]
}

@test "a data set smaller than one step: refused before anything runs, with the counts named" {
    mkdir "$T/small"
    make_cifar "$T/small/data_batch_1.bin" 16
    make_cifar "$T/small/test_batch.bin" 16
    run run_incv3 --dataset_path "$T/small" --autocast True -- --run "$T/r1" --width 0.0625
    assert_failure 2
    assert_output "run_incv3: 16 training images make no full step of --batch_size 128 x 1 worker(s) x 1 rank(s) = 128 images; use --batch_size 16 or less (see run_incv3 --help)"
    [ ! -e "$T/r1" ]
    run train --data "$T/small" --run "$T/r1" --width 0.0625
    assert_failure 2
    assert_output "train: 16 training images make no full step of --batch 128 x 1 worker(s) x 1 rank(s) = 128 images; use --batch 16 or less (see --help)"
    [ ! -e "$T/r1" ]
    # data-parallel shards: each worker needs a batch of its own
    run train --data "$T/small" --batch 16 --workers 2 --run "$T/r2" --width 0.0625
    assert_failure 2
    assert_output --partial "16 training images make no full step of --batch 16 x 2 worker(s) x 1 rank(s) = 32 images; use --batch 8 or less"
    run train --data "$T/small" --batch 1 --workers 32 --run "$T/r2" --width 0.0625
    assert_failure 2
    assert_output --partial "use fewer workers than images"
    # the ranks of an MPI job count too (checked before MPI is used)
    run env OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_RANK=0 train --mpi --data "$T/small" --batch 8 --run "$T/r2"
    assert_failure 2
    assert_output --partial "x 4 rank(s) = 32 images; use --batch 4 or less"
    run train --data "$T/small" --limit 10 --batch 12 --run "$T/r2"
    assert_output --partial "10 training images"
    [ ! -e "$T/r2" ]
    # exactly one step's worth trains
    train --data "$T/small" --batch 8 --workers 2 --epochs 1 --run "$T/r3" --width 0.0625 2> /dev/null
    run incv3-ckpt info "$T/r3/last.ckpt"
    assert_line "step 1"
}

@test "standard output that cannot be written: every tool and subcommand fails with one line, exit 1" {
    make_cifar "$T/d.bin" 8
    cifar-decode -b 4 "$T/d.bin" -o "$T/d.tz"
    incv3-ckpt init --width 0.0625 -o "$T/m.ckpt"
    incv3-step --eval -c "$T/m.ckpt" "$T/d.tz" -o "$T/l.tz"
    "$PY" -c "import numpy as np; np.save('$T/a.npy', np.zeros((2, 3), np.float32))"
    printed=(
        "cifar-decode $T/d.bin"
        "cifar-decode --count $T/d.bin"
        "augment --flip $T/d.tz"
        "tensor ls $T/d.tz"
        "tensor import a $T/a.npy"
        "incv3-step -c $T/m.ckpt --no-save $T/d.tz"
        "incv3-step --eval -c $T/m.ckpt $T/d.tz"
        "evaluate $T/l.tz"
        "evaluate --json $T/l.tz"
        "incv3-ckpt info $T/m.ckpt"
    )
    for cmd in "${printed[@]}"; do
        run bash -c "$cmd > /dev/full"
        [ "$status" -eq 1 ] || fail "$cmd > /dev/full: exit $status: $output"
        assert_one_line_error "${cmd%% *}"
        assert_output --partial "cannot write"
        # closed before the tool starts: nowhere to write either
        run bash -c "$cmd >&-"
        [ "$status" -eq 1 ] || fail "$cmd >&-: exit $status: $output"
        assert_one_line_error "${cmd%% *}"
    done
    # commands that print nothing on standard output have nothing to fail on
    silent=(
        "incv3-ckpt init --width 0.0625 -o $T/n.ckpt"
        "incv3-ckpt export $T/m.ckpt $T/m.safetensors"
        "incv3-ckpt import $T/m.safetensors -o $T/i.ckpt"
        "tensor export x -o $T/x.npy $T/d.tz"
        "tensor png -o $T/x.png $T/d.tz"
        "cifar-decode $T/d.bin -o $T/e.tz"
        "incv3-step -c $T/m.ckpt --no-save --log $T/log $T/d.tz"
    )
    for cmd in "${silent[@]}"; do
        run bash -c "$cmd > /dev/full"
        [ "$status" -eq 0 ] || fail "$cmd > /dev/full: exit $status: $output"
    done
    for script in train run_incv3; do
        run bash -c "$script --help > /dev/full"
        [ "$status" -eq 1 ] || fail "$script --help > /dev/full: exit $status: $output"
        assert_output "$script: cannot write standard output"
    done
}

@test "any name the file system takes is written atomically: 254 and 255 bytes, none left behind" {
    make_cifar "$T/d.bin" 8
    cifar-decode -b 4 "$T/d.bin" -o "$T/d.tz"
    for len in 254 255; do
        n=$(printf 'n%.0s' $(seq "$len"))
        mkdir "$T/$len" && cd "$T/$len"
        incv3-ckpt init --width 0.0625 -o "$n"
        incv3-ckpt info "$n" > /dev/null
        incv3-ckpt export "$n" "${n:0:$((len - 12))}.safetensors"
        rm "$n" && incv3-ckpt import "${n:0:$((len - 12))}.safetensors" -o "$n"
        incv3-step -c "$n" --no-save --log "${n:0:$((len - 4))}.log" "$T/d.tz"
        incv3-step --eval -c "$n" "$T/d.tz" -o "${n:0:$((len - 3))}.tz"
        cifar-decode -b 4 "$T/d.bin" -o "$n.x" 2> /dev/null && fail "took a name past the limit"
        rm "$n"
        cifar-decode -b 4 "$T/d.bin" -o "$n"
        augment --flip "$n" -o "${n:0:$((len - 1))}a"
        tensor export x -o "${n:0:$((len - 4))}.npy" "$n"
        tensor png -o "${n:0:$((len - 4))}.png" "$n"
        [ "$(ls | wc -l)" -eq 7 ] || fail "$(ls)"
        [ -z "$(find . -name '*.tmp.*')" ] || fail "a temporary file is left"
        cd "$T"
    done
    # a name the file system refuses is refused before anything is written
    run incv3-ckpt init --width 0.0625 -o "$T/$(printf 'n%.0s' $(seq 256))"
    assert_failure 1
    assert_one_line_error incv3-ckpt
    assert_output --partial "File name too long"
    [ -z "$(find "$T" -name '*.tmp.*')" ]
}
