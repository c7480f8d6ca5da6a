#!/usr/bin/env bats
# pipelines/train and run_incv3: a tiny run end to end, resume after a kill,
# the launcher's flags, swapping and tapping stages, fine-tuning.

load helpers/common

tiny=(--data "$SAMPLE" --width 0.125 --batch 32 --limit 256 --test-limit 100 --save-every 2)

weights() { incv3-ckpt export "$1" "$2"; }

@test "a tiny run: log, checkpoints, curves and accuracy" {
    train "${tiny[@]}" --epochs 2 --run "$T/run" 2> "$T/stderr"
    # stderr is no terminal here: still one line per epoch, with rate and ETA
    run grep -c '^train: epoch [12]/2: train loss [0-9.]*, test top-1 [0-9.]*% (top-5 [0-9.]*%), [0-9.]* images/s, elapsed [0-9hms]*, ETA [0-9hms]*$' "$T/stderr"
    assert_output 2
    for f in log.jsonl last.ckpt best.ckpt eval.json loss.png accuracy.png; do [ -s "$T/run/$f" ]; done
    [ "$(grep -c '"event":"step"' "$T/run/log.jsonl")" -eq 16 ]
    [ "$(grep -c '"event":"epoch"' "$T/run/log.jsonl")" -eq 2 ]
    run grep '"event":"epoch","epoch":1,' "$T/run/log.jsonl"
    assert_output --regexp '"test_accuracy":0\.[0-9]+,"test_top5":[01]\.[0-9]+,"test_loss":[0-9.]+'
    grep -q '"images":100,' "$T/run/eval.json"
    run file "$T/run/loss.png" "$T/run/accuracy.png"
    assert_line --regexp "loss.png: +PNG image data, 800 x 500"
    assert_line --regexp "accuracy.png: +PNG image data, 800 x 500"
    run incv3-ckpt info "$T/run/last.ckpt"
    assert_line "step 16"
    # what a replay needs: the command, the seed and the kernels; each epoch's wall time
    run grep -c '"event":"run","command":"train --data .*","seed":0,.*"kernels":{"openblas_core":"[A-Za-z0-9]*",.*"onednn_isa":"[a-z0-9_]*"' "$T/run/log.jsonl"
    assert_output 1
    run "$ROOT/bench/time-to-accuracy" "$T/run" "$T/tta.png"
    assert_success
    assert_line --regexp '^\| 2 \| 0h[0-9]{2}m[0-9]{2}s \| [0-9.]+ \| [0-9.]+ \|$'
    run file "$T/tta.png"
    assert_output --partial "PNG image data"
    # the same command again has nothing left to do
    cp "$T/run/log.jsonl" "$T/log.before"
    train "${tiny[@]}" --epochs 2 --run "$T/run"
    [ "$(grep -c '"event":"epoch"' "$T/run/log.jsonl")" -eq 2 ]
}

@test "a run killed mid-epoch and started again ends with the weights of an uninterrupted run" {
    train "${tiny[@]}" --epochs 2 --run "$T/whole"
    train "${tiny[@]}" --epochs 2 --run "$T/cut" &
    pid=$!
    # wait for the checkpoint of step 10 (epoch 1, step 2 of 8), then kill the whole pipeline
    until [ -f "$T/cut/log.jsonl" ] && grep -q '"step":11,' "$T/cut/log.jsonl"; do sleep 0.05; done
    pkill -9 -P $pid || true
    kill -9 $pid 2>/dev/null || true
    pkill -9 -f "incv3-step -c $T/cut" || true
    wait $pid 2>/dev/null || true
    run incv3-ckpt info "$T/cut/last.ckpt"
    assert_line --regexp "^step (10|11|12)$"
    train "${tiny[@]}" --epochs 2 --run "$T/cut"
    weights "$T/whole/last.ckpt" "$T/a.st"
    weights "$T/cut/last.ckpt" "$T/b.st"
    cmp "$T/a.st" "$T/b.st"
}

@test "the launcher's flags map onto the pipeline" {
    run_incv3 --dataset_path "$SAMPLE" --model_name inceptionv3 --batch_size 16 --epoch 1 \
        --device cpu --autocast False --distributed False --lr 0.02 --warm 0 \
        -- --width 0.125 --limit 64 --test-limit 50 --run "$T/one"
    [ "$(grep -c '"event":"step"' "$T/one/log.jsonl")" -eq 4 ]
    grep -q '"lr":0.02,' "$T/one/log.jsonl"
    [ "$(grep -c '"event":"epoch"' "$T/one/log.jsonl")" -eq 1 ]
    # --autocast True reaches incv3-step: where bf16 is missing, one note for the whole run
    run env -u INCV3_QUIET_BLAS ONEDNN_MAX_CPU_ISA=AVX512_CORE run_incv3 --dataset_path "$SAMPLE" \
        --batch_size 16 --epoch 1 --autocast True --lr 0.02 --warm 0 \
        -- --width 0.125 --limit 64 --test-limit 50 --run "$T/none"
    assert_success
    [ "$(grep -c 'no bf16 dot products' <<< "$output")" -eq 1 ]
    if grep -q avx512_bf16 /proc/cpuinfo; then    # and where it is there, trains in bf16
        run_incv3 --dataset_path "$SAMPLE" --batch_size 16 --epoch 1 --autocast True --lr 0.02 --warm 0 \
            -- --width 0.125 --limit 64 --test-limit 50 --run "$T/bf16"
        weights "$T/one/last.ckpt" "$T/a.st"
        weights "$T/bf16/last.ckpt" "$T/b.st"
        ! cmp -s "$T/a.st" "$T/b.st"
    fi
    # two workers: global batch 32, linear scaling 0.1 * 32 / 128 = 0.025 after warm-up
    run_incv3 --nproc_per_node 2 --dataset_path "$SAMPLE" --batch_size 16 --epoch 1 --warm 0 \
        --distributed True -- --width 0.125 --limit 64 --test-limit 50 --run "$T/two"
    [ "$(grep -c '"event":"step"' "$T/two/log.jsonl")" -eq 2 ]
    grep -q '"lr":0.025,' "$T/two/log.jsonl"
}

@test "train's refusals name the launcher's flags under run_incv3, its own when alone" {
    mkdir "$T/empty"
    # train's options | the launcher's | train's message | the launcher's
    while IFS='|' read -r train_args launcher_args train_says launcher_says; do
        run train --data "$SAMPLE" --run "$T/r" $train_args
        assert_failure 2
        assert_output "train: $train_says (see --help)"
        run run_incv3 --dataset_path "$SAMPLE" $launcher_args -- --run "$T/r"
        assert_failure 2
        assert_output "run_incv3: $launcher_says (see run_incv3 --help)"
        [ ! -e "$T/r" ]
    done <<'TABLE'
--batch 0|--batch_size 0|--batch must be a whole number from 1 to 1048576, not '0'|--batch_size must be a whole number from 1 to 1048576, not '0'
--batch 8000|--batch_size 8000|4000 training images make no full step of --batch 8000 x 1 worker(s) x 1 rank(s) = 8000 images; use --batch 4000 or less|4000 training images make no full step of --batch_size 8000 x 1 worker(s) x 1 rank(s) = 8000 images; use --batch_size 4000 or less
--epochs x|--epoch x|--epochs must be a whole number from 1 to 100000, not 'x'|--epoch must be a whole number from 1 to 100000, not 'x'
--workers 300|--nproc_per_node 300 --distributed True|--workers must be a whole number from 1 to 256, not '300'|--nproc_per_node must be a whole number from 1 to 256, not '300'
--workers 3000 --batch 2|--nproc_per_node 3000 --distributed True --batch_size 2|--workers must be a whole number from 1 to 256, not '3000'|--nproc_per_node must be a whole number from 1 to 256, not '3000'
--lr abc|--lr abc|--lr must be a number from 0 to 100, not 'abc'|--lr must be a number from 0 to 100, not 'abc'
--warmup -1|--warm -1|--warmup must be a number from 0 to 1000000, not '-1'|--warm must be a number from 0 to 1000000, not '-1'
TABLE
    # a data error (exit 1) names the launcher too
    run run_incv3 --dataset_path "$T/empty"
    assert_failure 1
    assert_output "run_incv3: no training batches in $T/empty (data_batch_*, train, or a tarball)"
    # an option of train's own, passed after --, keeps its name
    run run_incv3 --dataset_path "$SAMPLE" -- --batch 8000 --run "$T/r"
    assert_failure 2
    assert_output --partial "of --batch 8000 x 1 worker(s)"
}

@test "bad flags exit 2; a missing dataset exits 1; both say why" {
    for args in "--device cuda" "--autocast maybe" "--model_name resnet50" "--nproc_per_node 2" \
                "--distributed maybe" "--bogus 1"; do
        run run_incv3 --dataset_path "$SAMPLE" $args
        assert_failure 2
        assert_output --regexp "^run_incv3: "
    done
    run run_incv3 --dataset_path "$T/nowhere"
    assert_failure 1
    assert_output --partial "does not exist"
    run train --data "$T/nowhere"
    assert_failure 1
    run train --data "$SAMPLE" --epochs many
    assert_failure 2
    mkdir "$T/empty"
    run train --data "$T/empty"
    assert_failure 1
    assert_output --partial "no training batches in"
}

@test "the augmentation stage can be a Python filter or cat, and both train" {
    train "${tiny[@]}" --epochs 1 --run "$T/py" --augment "$PY $ROOT/examples/augment.py --flip --crop 2"
    train "${tiny[@]}" --epochs 1 --run "$T/cat" --augment cat
    for r in py cat; do grep -q '"event":"epoch","epoch":0' "$T/$r/log.jsonl"; done
    # the three stages give three different streams from the same input
    cifar-decode --raw -b 32 --limit 64 "$SAMPLE/data_batch_1.bin.zst" -o "$T/in.tz"
    augment --crop 4 --flip --rotate 15 "$T/in.tz" -o "$T/a.tz"
    "$PY" "$ROOT/examples/augment.py" --flip --crop 2 < "$T/in.tz" > "$T/p.tz"
    cat "$T/in.tz" > "$T/c.tz"
    a=$(raw_stream "$T/a.tz" | sha256sum) p=$(raw_stream "$T/p.tz" | sha256sum) c=$(raw_stream "$T/c.tz" | sha256sum)
    [ "$a" != "$p" ] && [ "$a" != "$c" ] && [ "$p" != "$c" ]
    # and the Python stage's output is a valid stream the tools read
    run bash -c "tensor ls '$T/p.tz' | grep -c '^x '"
    assert_output 2
}

@test "a tapped stream is what the next stage consumed; its PNG grid is valid" {
    incv3-ckpt init --width 0.125 -o "$T/m.ckpt"
    cifar-decode -b 16 --limit 32 --shuffle 1 --epoch 3 "$SAMPLE/data_batch_1.bin.zst" \
        | augment --crop 4 --flip --rotate 15 --normalize cifar10 --seed 1 --epoch 3 \
        | tee "$T/tap.tz" | incv3-step --eval -c "$T/m.ckpt" -o "$T/live.tz"
    incv3-step --eval -c "$T/m.ckpt" "$T/tap.tz" -o "$T/replay.tz"
    [ "$(raw_stream "$T/live.tz" | sha256sum)" = "$(raw_stream "$T/replay.tz" | sha256sum)" ]
    cifar-decode -b 16 --limit 32 --shuffle 1 --epoch 3 "$SAMPLE/data_batch_1.bin.zst" \
        | augment --crop 4 --flip --rotate 15 --normalize cifar10 --seed 1 --epoch 3 > "$T/again.tz"
    [ "$(raw_stream "$T/tap.tz" | sha256sum)" = "$(raw_stream "$T/again.tz" | sha256sum)" ]
    tensor png --normalize cifar10 -o "$T/tap.png" "$T/tap.tz"
    run file "$T/tap.png"
    assert_output --partial "PNG image data, 261 x 261"
}

@test "fine-tuning from a K=100 checkpoint to K=10 keeps every other tensor and trains" {
    incv3-ckpt init --classes 100 --width 0.125 --seed 4 -o "$T/c100.ckpt"
    incv3-ckpt export "$T/c100.ckpt" "$T/c100.safetensors"
    incv3-ckpt import "$T/c100.safetensors" --classes 10 --reinit-classifier -o "$T/c10.ckpt"
    run incv3-ckpt info "$T/c10.ckpt"
    assert_line "classes 10"
    incv3-ckpt export "$T/c10.ckpt" "$T/c10.safetensors"
    run "$PY" "$HELPERS/compare_weights.py" "$T/c100.safetensors" "$T/c10.safetensors" --skip linear.
    assert_success
    assert_output --partial "largest relative difference 0"
    train "${tiny[@]}" --epochs 1 --run "$T/ft" --init "$T/c100.safetensors" --reinit-classifier
    grep -q '"event":"epoch","epoch":0' "$T/ft/log.jsonl"
}

@test "recipe options reach their stages: Cutout in augment, the step's options, the average and flip TTA in evaluation" {
    opts=(--epochs 2 --schedule linear --warmup 0.5 --nesterov --label-smoothing 0.1 --ema 0.9 --tta flip --cutout 8)
    train "${tiny[@]}" "${opts[@]}" --run "$T/run" 2> /dev/null
    run incv3-ckpt info "$T/run/last.ckpt"
    assert_line "ema 1"
    # the linear schedule ends near 0 (16 steps: the last lr is 1/12 of the peak)
    last_lr=$(grep '"event":"step"' "$T/run/log.jsonl" | tail -n 1 | sed 's/.*"lr":\([0-9.e-]*\).*/\1/')
    awk -v l="$last_lr" 'BEGIN { exit !(l > 0 && l < 0.01) }' || fail "last lr $last_lr"
    # the epoch's accuracy is that of the average with flip TTA
    cifar-decode -b 500 --limit 100 "$SAMPLE/test_batch.bin.zst" \
        | incv3-step --eval -c "$T/run/last.ckpt" --ema-weights --tta flip | evaluate --json > "$T/by-hand.json"
    want=$(sed 's/.*"top1":\([0-9.]*\).*/\1/' "$T/by-hand.json")
    run grep "\"event\":\"epoch\",\"epoch\":1,\"test_accuracy\":$want," "$T/run/log.jsonl"
    assert_success
    # Cutout adds to the default augmentation only
    run train "${tiny[@]}" --cutout 8 --augment cat --run "$T/r2"
    assert_failure 2
    for bad in "--ema 1" "--label-smoothing 2" "--weight-decay 2" "--weight-decay x" "--tta mirror" "--cutout 0" "--schedule onecycle"; do
        run train "${tiny[@]}" $bad --run "$T/r2"
        assert_failure 2
        assert_one_line_error train
    done
}

@test "--recipe fast: its defaults reach incv3-step, and options given override them wherever they stand" {
    train "${tiny[@]}" --epochs 2 --no-nesterov --recipe fast --width 0.125 --weight-decay 1e-3 --no-bn-decay \
        --run "$T/run" 2> /dev/null
    run sed -n 's/.*"event":"run".*"step":"\([^"]*\)".*/\1/p' "$T/run/log.jsonl"
    assert_output --partial "--width 0.125"
    assert_output --partial "--schedule linear --warmup 0.333"
    assert_output --partial "--epochs 2"
    assert_output --partial "--autocast bf16 --label-smoothing 0.2"
    assert_output --partial "--weight-decay 1e-3 --no-bn-decay"
    refute_output --partial "--ema"
    refute_output --partial "--nesterov"
    run train "${tiny[@]}" --recipe slow --run "$T/r2"
    assert_failure 2
    assert_one_line_error train
}

@test "augmentation policies, RandomErasing, MixUp and CutMix reach augment; bad ones stop train before it starts" {
    train "${tiny[@]}" --epochs 1 --policy trivialaugment --random-erasing 0.25 --mixup 0.2 --cutmix 1 \
        --run "$T/run" 2> /dev/null
    grep -q '"event":"epoch","epoch":0' "$T/run/log.jsonl"
    for bad in "--policy bogus" "--policy randaugment:2,99" "--mixup 0" "--cutmix x" "--random-erasing 2" \
               "--policy autoaugment --augment cat"; do
        run train "${tiny[@]}" $bad --run "$T/r2"
        assert_failure 2
        assert_one_line_error train
        [ ! -e "$T/r2" ]
    done
}

@test "--progressive: the epochs in equal parts, each on its crops, the tests at 32x32; bad sizes stop train first" {
    train "${tiny[@]}" --width 0.0625 --epochs 3 --progressive 16,24 --run "$T/run" 2> "$T/stderr"
    grep -q "^train: epoch 2/3 (16x16 crops): train loss" "$T/stderr"
    grep -q "^train: epoch 3/3 (24x24 crops): train loss" "$T/stderr"
    run sed -n 's/.*"event":"train_epoch","epoch":\([0-9]\).*"input":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2x\3/p' "$T/run/log.jsonl"
    assert_output "$(printf '0 16x16\n1 16x16\n2 24x24')"
    [ "$(grep -c '"event":"epoch"' "$T/run/log.jsonl")" -eq 3 ]
    for bad in "--progressive 8" "--progressive 24,x" "--progressive 40" "--progressive ," \
               "--progressive 24 --aux" "--progressive 24 --augment cat"; do
        run train "${tiny[@]}" $bad --run "$T/r2"
        assert_failure 2
        assert_one_line_error train
        [ ! -e "$T/r2" ]
    done
}

@test "installed: incv3-train runs from its own directory and draws --stats with incv3-plot-stats" {
    make -s -C "$BATS_TEST_DIRNAME/.." BUILD="${INCV3_BUILD:-build}" install DESTDIR="$T/root" PREFIX=/usr > /dev/null
    [ -x "$T/root/usr/bin/incv3-plot-stats" ]
    env PATH=/usr/bin:/bin "$T/root/usr/bin/incv3-train" "${tiny[@]}" --epochs 1 --stats 2 --run "$T/run" 2> /dev/null
    [ -s "$T/run/updates.png" ] && [ -s "$T/run/dead-relu.png" ]
}
