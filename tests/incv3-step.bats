#!/usr/bin/env bats
# incv3-step: learning, determinism, autocast, evaluation mode, resuming, errors.

load helpers/common

setup() {
    T="$BATS_TEST_TMPDIR"
    TRAIN="$SAMPLE/data_batch_1.bin.zst"
}

digest() { incv3-ckpt export "$1" "$T/digest.st" && sha256sum < "$T/digest.st"; }

@test "training on the sample: the loss falls and test accuracy rises well above chance" {
    # width 0.125, 2000 images, 5 epochs: about a minute on 2 cores
    for e in 0 1 2 3 4; do
        cifar-decode -b 50 --limit 2000 --shuffle 1 --epoch $e --drop-last "$TRAIN" \
            | augment --crop 4 --flip --normalize cifar10 --seed 1 --epoch $e \
            | incv3-step -c "$T/m.ckpt" --width 0.125 --lr 0.05 --schedule cosine --epochs 5 --log "$T/log"
    done
    first=$(grep '"train_epoch","epoch":0' "$T/log" | sed 's/.*"loss":\([0-9.]*\).*/\1/')
    last=$(grep '"train_epoch","epoch":4' "$T/log" | sed 's/.*"loss":\([0-9.]*\).*/\1/')
    echo "train loss $first -> $last" >&3
    awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.3) }'
    cifar-decode -b 250 "$SAMPLE/test_batch.bin.zst" | incv3-step --eval -c "$T/m.ckpt" | evaluate --json > "$T/eval.json"
    top1=$(sed 's/.*"top1":\([0-9.]*\).*/\1/' "$T/eval.json")
    echo "test top-1 $top1" >&3
    awk -v a="$top1" 'BEGIN { exit !(a > 0.2) }'
}

@test "training with the same seed and threads is bitwise reproducible" {
    for run in a b; do
        cifar-decode -b 16 --limit 64 --shuffle 2 "$TRAIN" | augment --flip --normalize cifar10 --seed 2 \
            | incv3-step -c "$T/$run.ckpt" --width 0.125 --aux --threads 2 --seed 5 --log /dev/null
    done
    cmp "$T/a.ckpt" "$T/b.ckpt"
}

@test "--autocast bf16: reproducible, an fp32 checkpoint, near fp32; where bf16 is missing, said once and fp32" {
    cifar-decode -b 16 --limit 64 --shuffle 2 "$TRAIN" -o "$T/d.tz"
    step() { incv3-step -c "$T/$1.ckpt" --width 0.125 --threads 2 --seed 5 --log "$T/log-$1" "${@:2}" "$T/d.tz"; }
    step fp32
    # no bf16 dot products (oneDNN told so): one note, then exactly the fp32 run
    run env -u INCV3_QUIET_BLAS ONEDNN_MAX_CPU_ISA=AVX512_CORE incv3-step -c "$T/none.ckpt" --width 0.125 \
        --threads 2 --seed 5 --log /dev/null --quiet --autocast bf16 "$T/d.tz"
    assert_success
    assert_output "incv3-step: note: --autocast bf16: this CPU has no bf16 dot products (AVX512_BF16); training in fp32"
    cmp "$T/none.ckpt" "$T/fp32.ckpt"
    run incv3-step -c "$T/x.ckpt" --autocast fp16 "$T/d.tz"
    assert_failure 2
    assert_output "incv3-step: --autocast: 'fp16' is not bf16 or fp32"
    grep -q avx512_bf16 /proc/cpuinfo || skip "this CPU has no bf16 dot products"
    step a --autocast bf16
    step b --autocast bf16
    cmp "$T/a.ckpt" "$T/b.ckpt"
    ! cmp -s "$T/a.ckpt" "$T/fp32.ckpt"            # bf16 did run
    # the format stays fp32: every tensor record of the checkpoint is f32 or i64
    ! tensor ls "$T/a.ckpt" | awk 'NR > 2 && $2 != "f32" && $2 != "i64"' | grep .
    # the first step's loss, before any update, moves by bf16's rounding alone (0.07%
    # measured). The later steps of a tiny model warming up to lr 0.1 are chaotic: two
    # fp32 builds differing only in the order of their sums (Winograd from 16 input
    # channels or from 8) gave step 4 losses of 2.067 and 2.281, 10% apart. So over all
    # four, the epoch's mean loss: fp32 builds spread by 2.4% there, bf16 0.2-1.1% from fp32.
    loss() { grep -m1 -o "\"event\":\"$2\".*\"loss\":[0-9.]*" "$T/log-$1" | sed 's/.*://'; }
    awk -v a="$(loss fp32 step)" -v b="$(loss a step)" 'BEGIN { print a, b; exit (a - b > 0.01 * a || b - a > 0.01 * a) }'
    awk -v a="$(loss fp32 train_epoch)" -v b="$(loss a train_epoch)" 'BEGIN { print a, b; exit (a - b > 0.05 * a || b - a > 0.05 * a) }'
}

@test "eval is deterministic and emits logits [B,K] with y and idx passed on" {
    incv3-ckpt init --width 0.125 --seed 3 -o "$T/m.ckpt"
    cifar-decode -b 20 --limit 40 "$SAMPLE/test_batch.bin.zst" -o "$T/t.tz"
    incv3-step --eval -c "$T/m.ckpt" "$T/t.tz" -o "$T/a.tz"
    incv3-step --eval -c "$T/m.ckpt" "$T/t.tz" -o "$T/b.tz"
    cmp "$T/a.tz" "$T/b.tz"
    run bash -c "tensor ls '$T/a.tz' | awk 'NR > 1 { print \$1, \$3 }' | paste -sd ' '"
    assert_output "meta [79] idx [20] logits [20,10] y [20] idx [20] logits [20,10] y [20]"
}

@test "a checkpoint is resumed: two halves give the weights of one whole run" {
    cifar-decode -b 16 --limit 64 --shuffle 4 "$TRAIN" -o "$T/data.tz"
    incv3-step -c "$T/whole.ckpt" --width 0.125 --log /dev/null "$T/data.tz"
    # stop after 2 of 4 steps (save-every 2, then kill), start again with the same command
    incv3-step -c "$T/half.ckpt" --width 0.125 --save-every 2 --log "$T/log" "$T/data.tz" &
    pid=$!
    while ! grep -q '"step":2,' "$T/log" 2>/dev/null; do sleep 0.05; done
    sleep 0.5
    kill -9 $pid || true
    wait $pid || true
    run incv3-ckpt info "$T/half.ckpt"
    assert_line --regexp "^step [234]$"
    incv3-step -c "$T/half.ckpt" --width 0.125 --log /dev/null "$T/data.tz"
    [ "$(digest "$T/whole.ckpt")" = "$(digest "$T/half.ckpt")" ]
}

@test "a loss that becomes NaN stops training and leaves the last checkpoint untouched" {
    cifar-decode -b 16 --limit 32 "$TRAIN" | incv3-step -c "$T/m.ckpt" --width 0.125 --log /dev/null
    cp "$T/m.ckpt" "$T/before.ckpt"
    "$PY" - "$T/nan.tz" <<'PYEOF'
import sys, numpy as np
sys.path.insert(0, "tests/helpers")
from streams import record, END
x = np.zeros((4, 3, 32, 32), np.float32); x[1, 0, 5, 5] = np.nan
open(sys.argv[1], "wb").write(record("x", x) + record("y", np.arange(4, dtype=np.int64)) + END)
PYEOF
    run incv3-step -c "$T/m.ckpt" --log /dev/null "$T/nan.tz"
    assert_failure 1
    assert_one_line_error incv3-step
    assert_output --partial "loss is NaN"
    cmp "$T/m.ckpt" "$T/before.ckpt"
}

@test "bad input to incv3-step: wrong shapes, labels out of range, missing checkpoint" {
    "$PY" - "$T" <<'PYEOF'
import sys, numpy as np
sys.path.insert(0, "tests/helpers")
from streams import record, END
d = sys.argv[1]
open(d + "/shape.tz", "wb").write(record("x", np.zeros((2, 4, 16, 16), np.uint8)) + record("y", np.zeros(2, np.int64)) + END)
open(d + "/small.tz", "wb").write(record("x", np.zeros((2, 3, 32, 7), np.uint8)) + record("y", np.zeros(2, np.int64)) + END)
open(d + "/label.tz", "wb").write(record("x", np.zeros((2, 3, 32, 32), np.uint8)) + record("y", np.array([1, 10], np.int64)) + END)
PYEOF
    run incv3-step -c "$T/m.ckpt" --width 0.125 "$T/shape.tz"
    assert_failure 1
    assert_one_line_error incv3-step
    assert_output --partial "dimension 1 is 4"
    run incv3-step -c "$T/m.ckpt" --width 0.125 "$T/small.tz"
    assert_failure 1
    assert_one_line_error incv3-step
    assert_output --partial "images of 32x7 are too small"
    run incv3-step -c "$T/m.ckpt" --width 0.125 "$T/label.tz"
    assert_failure 1
    assert_output --partial "label 10"
    [ ! -e "$T/m.ckpt" ]
    run incv3-step --eval -c "$T/none.ckpt" "$T/shape.tz"
    assert_failure 1
    assert_one_line_error incv3-step
    for args in "" "-c x --lr abc" "-c x --schedule onecycle" "-c x --bogus" "-c x --reinit-classifier"; do
        run incv3-step $args
        assert_failure 2
        assert_one_line_error incv3-step
    done
}

@test "recipe options: label smoothing, Nesterov, linear schedule and a moving average resume exactly and change the weights" {
    cifar-decode -b 16 --limit 64 "$TRAIN" -o "$T/all.tz"
    cifar-decode -b 16 --limit 32 "$TRAIN" -o "$T/half.tz"
    opts=(--width 0.0625 --epochs 1 --steps-per-epoch 4 --warmup 0.5 --log /dev/null)
    recipe=(--ema 0.9 --label-smoothing 0.1 --nesterov --schedule linear)
    incv3-step -c "$T/plain.ckpt" "${opts[@]}" "$T/all.tz"
    incv3-step -c "$T/whole.ckpt" "${opts[@]}" "${recipe[@]}" "$T/all.tz"
    # two halves: the second run skips the two batches the checkpoint has trained
    incv3-step -c "$T/resumed.ckpt" "${opts[@]}" "${recipe[@]}" "$T/half.tz"
    incv3-step -c "$T/resumed.ckpt" "${opts[@]}" "${recipe[@]}" "$T/all.tz"
    [ "$(digest "$T/whole.ckpt")" = "$(digest "$T/resumed.ckpt")" ]
    incv3-ckpt export --ema-weights "$T/whole.ckpt" "$T/w.st"
    incv3-ckpt export --ema-weights "$T/resumed.ckpt" "$T/r.st"
    cmp "$T/w.st" "$T/r.st"
    [ "$(digest "$T/plain.ckpt")" != "$(digest "$T/whole.ckpt")" ]
    ! cmp -s "$T/w.st" "$T/digest.st"
    run incv3-ckpt info "$T/whole.ckpt"
    assert_line "ema 1"
    run incv3-ckpt info "$T/plain.ckpt"
    assert_line "ema 0"
    # each option alone moves the weights
    for opt in "--label-smoothing 0.1" "--nesterov" "--schedule linear"; do
        incv3-step -c "$T/one.ckpt" "${opts[@]}" $opt "$T/all.tz"
        [ "$(digest "$T/one.ckpt")" != "$(digest "$T/plain.ckpt")" ] || fail "$opt changed nothing"
        rm "$T/one.ckpt"
    done
}

@test "--no-bn-decay: one step decays the weights alone; batch norm and biases step as without decay" {
    cifar-decode -b 16 --limit 16 "$TRAIN" -o "$T/one.tz"
    for run in "none --weight-decay 0" "all --weight-decay 0.1" "weights --weight-decay 0.1 --no-bn-decay"; do
        set -- $run
        incv3-step -c "$T/$1.ckpt" --width 0.0625 --steps-per-epoch 1 --log /dev/null "${@:2}" "$T/one.tz"
        incv3-ckpt export "$T/$1.ckpt" "$T/$1.st"
    done
    # from the same start and gradients, a parameter differs only where decay reached it
    "$PY" -c '
import sys
sys.path.insert(0, sys.argv[1])
from compare_weights import load
none, every, weights = (load(sys.argv[2] + "/" + n + ".st") for n in ("none", "all", "weights"))
norm_bias = lambda k: k.endswith(".bias") or ".bn." in k
checked = 0
for k, v in none.items():
    if v.dtype.kind != "f" or k.endswith(("running_mean", "running_var")):
        continue
    checked += 1
    if norm_bias(k):
        assert (weights[k] == v).all(), k + " decayed under --no-bn-decay"
        if k.endswith(".bn.weight"):          # beta and biases start at 0: nothing to decay yet
            assert (every[k] != v).any(), k + " not decayed by --weight-decay"
    else:
        assert (weights[k] == every[k]).all(), k + " decayed differently"
        assert (weights[k] != v).any(), k + " not decayed"
assert checked > 100, checked
' "$HELPERS" "$T"
}

@test "smaller crops train the same model and 32x32 evaluates it; too small a size, or --aux, is refused whole" {
    # progressive resizing's two epochs: 20x20 crops, then 24x24
    cifar-decode -b 16 --limit 32 --shuffle 1 --epoch 0 "$TRAIN" | augment --crop 4 --crop-size 20 -o "$T/c20.tz"
    cifar-decode -b 16 --limit 32 --shuffle 1 --epoch 1 "$TRAIN" | augment --crop 4 --crop-size 24 -o "$T/c24.tz"
    incv3-step -c "$T/m.ckpt" --width 0.0625 --log "$T/log" "$T/c20.tz"
    incv3-step -c "$T/m.ckpt" --width 0.0625 --log "$T/log" "$T/c24.tz"
    grep -q '"event":"train_epoch".*"input":\[20,20\]' "$T/log"
    grep -q '"event":"train_epoch".*"input":\[24,24\]' "$T/log"
    [ "$(grep -c '"event":"step"' "$T/log")" -eq 4 ]
    cifar-decode -b 50 --limit 100 "$SAMPLE/test_batch.bin.zst" | incv3-step --eval -c "$T/m.ckpt" --tta flip \
        | evaluate --json > "$T/eval.json"
    grep -q '"images":100,' "$T/eval.json"
    cp "$T/m.ckpt" "$T/before.ckpt"
    cifar-decode -b 16 --limit 32 --shuffle 1 --epoch 2 "$TRAIN" | augment --crop-size 8 -o "$T/c8.tz"
    run incv3-step -c "$T/m.ckpt" --log /dev/null "$T/c8.tz"
    assert_failure 1
    assert_output "incv3-step: record 'x' at byte 246: images of 8x8 are too small: Mixed_7a.branch3x3's 3x3 kernel meets a 2x2 input"
    cmp "$T/m.ckpt" "$T/before.ckpt"
    run incv3-step -c "$T/aux.ckpt" --width 0.0625 --aux --log /dev/null "$T/c24.tz"
    assert_failure 1
    assert_output --partial "a model with the auxiliary classifier takes 32x32 images only"
    [ ! -e "$T/aux.ckpt" ]
}

@test "--eval --ema-weights evaluates the moving average, as its export does; without one it is an error" {
    cifar-decode -b 16 --limit 64 "$TRAIN" -o "$T/all.tz"
    cifar-decode -b 32 --limit 32 "$SAMPLE/test_batch.bin.zst" -o "$T/test.tz"
    incv3-step -c "$T/m.ckpt" --width 0.0625 --ema 0.5 --log /dev/null "$T/all.tz"
    incv3-step --eval -c "$T/m.ckpt" --ema-weights "$T/test.tz" -o "$T/ema.tz"
    incv3-step --eval -c "$T/m.ckpt" "$T/test.tz" -o "$T/raw.tz"
    incv3-ckpt export --ema-weights "$T/m.ckpt" "$T/ema.st"
    incv3-ckpt import "$T/ema.st" -o "$T/from-ema.ckpt"
    incv3-step --eval -c "$T/from-ema.ckpt" "$T/test.tz" -o "$T/imported.tz"
    tensor export logits -o "$T/a.npy" "$T/ema.tz"
    tensor export logits -o "$T/b.npy" "$T/imported.tz"
    tensor export logits -o "$T/c.npy" "$T/raw.tz"
    "$PY" -c "
import numpy as np
a, b, c = (np.load('$T/%s.npy' % k) for k in 'abc')
assert (a == b).all(), 'the average differs from its export'
assert np.abs(a - c).max() > 1e-4, 'the average is the raw weights'"
    incv3-ckpt init --width 0.0625 -o "$T/none.ckpt"
    run incv3-step --eval -c "$T/none.ckpt" --ema-weights "$T/test.tz" -o "$T/x.tz"
    assert_failure 1
    assert_output --partial "keeps no moving average"
    [ ! -e "$T/x.tz" ]
    run incv3-step -c "$T/m.ckpt" --ema-weights "$T/all.tz"
    assert_failure 2
    for decay in 1 0; do
        run incv3-step -c "$T/m.ckpt" --ema $decay "$T/all.tz"
        assert_failure 2
    done
    run incv3-step --eval -c "$T/m.ckpt" --tta mirror "$T/test.tz"
    assert_failure 2
}

@test "--tta flip: the mean of the logits of each image and of its mirror" {
    cifar-decode -b 16 --limit 64 "$TRAIN" | incv3-step -c "$T/m.ckpt" --width 0.0625 --log /dev/null
    cifar-decode -b 8 --limit 16 "$SAMPLE/test_batch.bin.zst" -o "$T/test.tz"
    "$PY" - "$T/test.tz" "$T/mirror.tz" <<'PYEOF'
import sys
sys.path.insert(0, "tests/helpers")
import numpy as np
from streams import DT, decompressed, parse, record
out = b""
for name, dtype, dims, whole, payload in parse(decompressed(sys.argv[1])):
    if name == "x":
        x = np.frombuffer(payload, DT[dtype]).reshape(dims)
        whole = record("x", np.ascontiguousarray(x[..., ::-1]))
    out += whole
open(sys.argv[2], "wb").write(out)
PYEOF
    incv3-step --eval -c "$T/m.ckpt" "$T/test.tz" -o "$T/plain.tz"
    incv3-step --eval -c "$T/m.ckpt" "$T/mirror.tz" -o "$T/mirrored.tz"
    incv3-step --eval -c "$T/m.ckpt" --tta flip "$T/test.tz" -o "$T/tta.tz"
    for k in 0 1; do
        tensor export logits -i $k -o "$T/p$k.npy" "$T/plain.tz"
        tensor export logits -i $k -o "$T/m$k.npy" "$T/mirrored.tz"
        tensor export logits -i $k -o "$T/t$k.npy" "$T/tta.tz"
    done
    "$PY" -c "
import numpy as np
for k in (0, 1):
    p, m, t = (np.load('$T/%s%d.npy' % (s, k)) for s in 'pmt')
    want = np.float32(0.5) * (p + m)
    assert np.abs(t - want).max() <= 1e-6 * np.abs(want).max(), np.abs(t - want).max()
    assert np.abs(t - p).max() > 1e-3 * np.abs(p).max(), 'a mirror gave the same logits'"
}

@test "taps in evaluation: tap.NAME records of the modules' shapes beside the logits; unknown names list the nearest" {
    cifar-decode -b 200 --limit 400 --shuffle 1 --drop-last "$TRAIN" | incv3-step -c "$T/m.ckpt" --width 0.125 --quiet --log /dev/null
    cifar-decode -b 10 --limit 20 "$SAMPLE/test_batch.bin.zst" \
        | incv3-step --eval -c "$T/m.ckpt" --tap Mixed_5b,Mixed_6e.branch7x7stack.3 --tap linear,avgpool > "$T/taps.tz"
    run tensor ls "$T/taps.tz"
    assert_line --regexp '^tap\.Mixed_5b +f32 +\[10,32,30,30\]'
    assert_line --regexp '^tap\.Mixed_6e\.branch7x7stack\.3 +f32 +\[10,24,14,14\]'
    assert_line --regexp '^tap\.avgpool +f32 +\[10,256,1,1\]'
    [ "$(grep -c '^tap\.linear ' <<< "$output")" -eq 2 ]
    # linear's tap is the logits, bit for bit
    for what in logits tap.linear; do tensor export $what -i 1 -o "$T/$what.npy" "$T/taps.tz"; done
    cmp <(tail -c 400 "$T/logits.npy") <(tail -c 400 "$T/tap.linear.npy")
    for bad in "--tap Mixed_5b.branch1x1.conv" "--tap Mixed_9z" "--tap-grad Mixed_5b" "--tap ," "--tap Mixed_5b,"; do
        run incv3-step --eval -c "$T/m.ckpt" $bad "$T/taps.tz"
        assert_failure 2
        assert_one_line_error incv3-step
    done
    run incv3-step --eval -c "$T/m.ckpt" --tap Mixed_5b.branch1x1.conv "$T/taps.tz"
    assert_output --partial "the nearest: Mixed_5b.branch1x1.relu, Mixed_5b.branch1x1"
    # under autocast the taps come from the bf16 the model keeps: near fp32's
    cifar-decode -b 10 --limit 10 "$SAMPLE/test_batch.bin.zst" -o "$T/ten.tz"
    for p in fp32 bf16; do
        incv3-step --eval -c "$T/m.ckpt" --autocast $p --tap Mixed_6a "$T/ten.tz" | tensor export tap.Mixed_6a -o "$T/$p.npy"
    done
    run "$PY" -c "import numpy as np; a, b = np.load('$T/fp32.npy'), np.load('$T/bf16.npy'); print(np.linalg.norm(a - b) / np.linalg.norm(a) < 0.02)"
    assert_output True
}

@test "taps in training: values and gradients per step into the stream, the weights as without them" {
    cifar-decode -b 32 --limit 128 --shuffle 1 --drop-last "$TRAIN" -o "$T/in.tz"
    incv3-step -c "$T/plain.ckpt" --width 0.125 --quiet --log /dev/null "$T/in.tz"
    incv3-step -c "$T/tapped.ckpt" --width 0.125 --quiet --log /dev/null --tap Mixed_6a --tap-grad Mixed_6a,linear \
        -o "$T/taps.tz" "$T/in.tz"
    [ "$(digest "$T/plain.ckpt")" = "$(digest "$T/tapped.ckpt")" ]
    run tensor ls "$T/taps.tz"
    [ "$(grep -c '^tap\.Mixed_6a ' <<< "$output")" -eq 4 ]
    [ "$(grep -c '^tapgrad\.Mixed_6a ' <<< "$output")" -eq 4 ]
    [ "$(grep -c '^tapgrad\.linear ' <<< "$output")" -eq 4 ]
    [ "$(grep -c '^y ' <<< "$output")" -eq 4 ]
    # the logits' gradient is softmax minus one-hot, over the batch: rows sum to 0
    tensor export tapgrad.linear -o "$T/g.npy" "$T/taps.tz"
    run "$PY" -c "import numpy as np; g = np.load('$T/g.npy'); print(g.shape, abs(g.sum(1)).max() < 1e-6, (g.argmin(1) >= 0).all())"
    assert_output "(32, 10) True True"
    # the stream needs a place of its own
    run incv3-step -c "$T/x.ckpt" --width 0.125 --tap Mixed_6a "$T/in.tz"
    assert_failure 2
    assert_one_line_error incv3-step
    [ ! -e "$T/x.ckpt" ]
}

@test "--features: the pooled penultimate vector; a linear fit on it gives back the model's logits" {
    cifar-decode -b 200 --limit 400 --shuffle 1 --drop-last "$TRAIN" | incv3-step -c "$T/m.ckpt" --width 0.125 --quiet --log /dev/null
    cifar-decode -b 600 --limit 600 "$SAMPLE/test_batch.bin.zst" | incv3-step --eval -c "$T/m.ckpt" --features > "$T/f.tz"
    tensor export features -o "$T/features.npy" "$T/f.tz"
    tensor export logits -o "$T/logits.npy" "$T/f.tz"
    run "$PY" - "$T" <<'PYEOF'
import sys, numpy as np
d = sys.argv[1]
f, z = np.load(d + "/features.npy").astype(np.float64), np.load(d + "/logits.npy").astype(np.float64)
assert f.shape == (600, 256), f.shape
a = np.hstack([f, np.ones((600, 1))])
w, *_ = np.linalg.lstsq(a[:400], z[:400], rcond=None)      # fitted on 400 images
pred = a[400:] @ w                                          # and held against the other 200
print(np.abs(pred - z[400:]).max() / np.abs(z[400:]).max() < 1e-3, (pred.argmax(1) == z[400:].argmax(1)).all())
PYEOF
    assert_output "True True"
    run incv3-step -c "$T/m.ckpt" --features "$T/f.tz"
    assert_failure 2
}

@test "--stats N: every N steps each parameter's norms and update ratio, each block's activation statistics" {
    cifar-decode -b 32 --limit 192 --shuffle 1 --drop-last "$TRAIN" \
        | incv3-step -c "$T/m.ckpt" --width 0.125 --stats 2 --quiet --log "$T/log"
    [ "$(grep -c '"event":"stats"' "$T/log")" -eq 3 ]
    run "$PY" - "$T/log" <<'PYEOF'
import json, sys
stats = [json.loads(l) for l in open(sys.argv[1]) if '"stats"' in l]
s = stats[-1]
print(s["step"], len(s["params"]), len(s["activations"]))
w = s["params"]["Mixed_6e.branch7x7stack.3.conv.weight"]
assert w[0] > 0 and w[1] > 0 and 0 < w[2] < 1, w
for name, (mean, std, zeros, top) in s["activations"].items():
    assert mean >= 0 and std >= 0 and 0 <= zeros <= 1 and top >= mean, name
PYEOF
    assert_output "6 284 16"
    run incv3-step --eval -c "$T/m.ckpt" --stats 2 /dev/null
    assert_failure 2
}

@test "--profile: every kind's time and its GEMM part; the shares sum to one; the weights as without it" {
    cifar-decode -b 16 --limit 96 "$TRAIN" -o "$T/d.tz"
    incv3-step -c "$T/a.ckpt" --width 0.125 --threads 2 --seed 5 --log "$T/log" --profile "$T/d.tz"
    incv3-step -c "$T/b.ckpt" --width 0.125 --threads 2 --seed 5 --log /dev/null "$T/d.tz"
    cmp "$T/a.ckpt" "$T/b.ckpt"
    [ "$(grep -c '"event":"profile"' "$T/log")" = 1 ]
    grep '"event":"profile"' "$T/log" | python3 -c '
import json, sys
p = json.load(sys.stdin)
kinds = {k: v for k, v in p.items() if isinstance(v, list)}
assert len(kinds) == 14, kinds
assert abs(sum(v[1] for v in kinds.values()) - 1) < 0.01, kinds
assert all(0 <= v[2] <= v[0] + 1e-3 for v in kinds.values()), kinds      # a GEMM part within its kind
for k in ("conv 1x1", "conv 3x3"):
    assert kinds[k][2] > 0, k                                              # they multiply
for k in ("bn+relu", "pooling", "im2col/col2im", "optimizer"):
    assert kinds[k][2] == 0, k                                             # they do not
gemm = sum(v[2] for v in kinds.values()) / p["seconds"]
rounding = 15 * 0.0005 / p["seconds"]                  # seconds are logged to 3 decimals
assert 0.05 < p["gemm_share"] < 0.95 and abs(p["gemm_share"] - gemm) < rounding + 1e-3, p
'
}
