#!/usr/bin/env bats
# Data parallel: N workers equal one process with ghost batch norm; MPI equals local
# workers; a dead worker stops the run.
#
# Two bars. Exact, under one set of OpenBLAS kernels and thread count: every worker
# holds the same weights, bit for bit, and mpirun ranks compute bit for bit what local
# workers compute. To rounding, anywhere: N workers against one process of batch N*b
# differ only in the order of their sums, and how far that moves this network (which
# amplifies rounding by orders of magnitude at initialisation) depends on the kernels.
# So the bound is measured in the test itself: the one process again at another thread
# count and under other OpenBLAS kernels ("the same math"), and the workers must stay
# within a few times that noise per tensor (tests/helpers/equivalence.py). A worker
# that trained alone is checked to land hundreds of times outside.

load helpers/common

DATA="$SAMPLE/data_batch_1.bin.zst"
opts=(--width 0.125 --warmup 0 --quiet)

# workers N STEPS LR [OPTION...]: N workers of local batch 8 through allreduce-merge -> $T/w0.ckpt
workers() {
    local n=$1 steps=$2 lr=$3 ins=() outs=()
    shift 3
    for ((i = 0; i < n; i++)); do
        mkfifo "$T/g$i" "$T/m$i"; ins+=("$T/g$i"); outs+=("$T/m$i")
    done
    local IFS=,
    allreduce-merge "${ins[*]}" "${outs[*]}" &
    unset IFS
    for ((i = 0; i < n; i++)); do
        cifar-decode -b 8 --limit $((8 * n * steps)) --shard $i/$n --shuffle 3 --drop-last "$DATA" \
            | incv3-step -c "$T/w$i.ckpt" "${opts[@]}" --lr "$lr" --threads 1 "$@" \
                --exchange "$T/g$i,$T/m$i" --log "$T/log$i" &
    done
    wait
    for ((i = 1; i < n; i++)); do cmp "$T/w0.ckpt" "$T/w$i.ckpt"; done   # bit for bit
}

# single N STEPS LR NAME [env...]: one process, batch 8N, BN in ghost groups of 8
# -> $T/NAME.ckpt; NAME "s" is the reference, the others its noise.
single() {
    local n=$1 steps=$2 lr=$3 name=$4 threads=1
    shift 4
    [ "$name" = s2 ] && threads=2
    cifar-decode -b $((8 * n)) --limit $((8 * n * steps)) --shuffle 3 --drop-last "$DATA" \
        | env "$@" incv3-step -c "$T/$name.ckpt" "${opts[@]}" --lr "$lr" --threads $threads \
            --ghost-batch 8 --log "$T/log-$name"
}

# Generic kernels (OpenBLAS's Prescott, oneDNN's SSE4.1) sum in another order than any
# tuned set.
other_kernels() {
    if [ "${OPENBLAS_CORETYPE:-}" = Prescott ]; then echo OPENBLAS_CORETYPE=Sandybridge ONEDNN_MAX_CPU_ISA=AVX
    else echo OPENBLAS_CORETYPE=Prescott ONEDNN_MAX_CPU_ISA=SSE41; fi
}

# equivalent N STEPS LR: N workers against one process, within the noise of the latter
equivalent() {
    local n=$1 steps=$2 lr=$3
    rm -f "$T"/g* "$T"/m* "$T"/*.ckpt "$T"/log*
    workers "$n" "$steps" "$lr"
    single "$n" "$steps" "$lr" s
    single "$n" "$steps" "$lr" s2
    single "$n" "$steps" "$lr" sk $(other_kernels)
    run "$PY" "$HELPERS/equivalence.py" "$T/s.ckpt" "$T/w0.ckpt" "$T/s2.ckpt" "$T/sk.ckpt"
    echo "$n workers, $steps steps: $output" >&3
    assert_success
}

@test "2 and 3 workers after one step: one process with ghost BN, to its own rounding noise" {
    for n in 2 3; do equivalent $n 1 0.002; done
    # the check has teeth: worker 0 trained alone on its shard is far outside
    cifar-decode -b 8 --limit 24 --shard 0/3 --shuffle 3 --drop-last "$DATA" \
        | incv3-step -c "$T/alone.ckpt" "${opts[@]}" --lr 0.002 --threads 1 --log /dev/null
    run "$PY" "$HELPERS/equivalence.py" "$T/s.ckpt" "$T/alone.ckpt" "$T/s2.ckpt" "$T/sk.ckpt" --ratio 40
    echo "a worker alone: $output" >&3
    assert_failure
    [[ "$output" == *"learned: "*" x its noise (bound 40)"* ]]
}

# Steps after the first: at lr 0.002 rounding alone moves this network's updates by a
# median 40% within three steps (chaos at initialisation, whatever sums the exchange
# does), so the steps are compared at a learning rate small enough that each step's
# gradients are taken at nearly the initial weights. What is checked is how the
# exchange carries steps: the momentum (the gradients' running sum), BN statistics
# averaged over workers, the step count.
@test "2 and 3 workers over three steps: the momentum, statistics and step of one process" {
    for n in 2 3; do equivalent $n 3 1e-6; done
}

# Buckets only change when the sums travel, never their bits.
@test "gradient buckets that split tensors, hold several, or are the whole gradient: the same bits" {
    for mb in 0 0.01 0.3 64; do
        rm -f "$T"/g* "$T"/m* "$T"/w*.ckpt "$T"/log*
        workers 3 2 0.002 --bucket-mb $mb
        cp "$T/w0.ckpt" "$T/bucket-$mb.ckpt"
    done
    # 0.01 MB: 2,621 floats, so most tensors span buckets; 0.3 MB: several tensors each
    for mb in 0.01 0.3 64; do cmp "$T/bucket-0.ckpt" "$T/bucket-$mb.ckpt"; done
    # workers that disagree on the buckets are stopped, not mixed up
    mkfifo "$T/a0" "$T/a1" "$T/r0" "$T/r1"
    allreduce-merge "$T/a0,$T/a1" "$T/r0,$T/r1" 2> "$T/merge.err" &
    merger=$!
    for i in 0 1; do
        cifar-decode -b 8 --limit 16 --shard $i/2 "$DATA" \
            | incv3-step -c "$T/x$i.ckpt" "${opts[@]}" --bucket-mb $((i + 1)) --exchange "$T/a$i,$T/r$i" \
                --log /dev/null 2> /dev/null &
    done
    status=0
    wait $merger || status=$?
    [ "$status" -eq 1 ]
    grep -q "does not match" "$T/merge.err"
    wait || true
}

@test "mpirun -np 2 gives the same weights as 2 local workers" {
    command -v mpirun >/dev/null || skip "OpenMPI is not installed"
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    common=(--data "$SAMPLE" --width 0.125 --batch 16 --limit 128 --test-limit 50 --epochs 2 --threads 1)
    mpirun --oversubscribe -np 2 "$ROOT/pipelines/train" --mpi "${common[@]}" --run "$T/mpi"
    train --workers 2 "${common[@]}" --run "$T/local"
    incv3-ckpt export "$T/mpi/last.ckpt" "$T/a.st"
    incv3-ckpt export "$T/local/last.ckpt" "$T/b.st"
    cmp "$T/a.st" "$T/b.st"
    # many buckets in flight across ranks at once (MPI_Iallreduce): the same bits
    mpirun --oversubscribe -np 2 "$ROOT/pipelines/train" --mpi "${common[@]}" --bucket-mb 0.02 --run "$T/mpi-b"
    incv3-ckpt export "$T/mpi-b/last.ckpt" "$T/d.st"
    cmp "$T/a.st" "$T/d.st"
    # the other rank kept an identical copy
    incv3-ckpt export "$T/mpi/rank1.ckpt" "$T/c.st"
    cmp "$T/a.st" "$T/c.st"
}

# kill_mid_run PID LOG PATTERN: once LOG shows step 3, SIGKILL the first process
# matching PATTERN; sets status (PID's exit) and elapsed (seconds until it ended)
kill_mid_run() {
    local pid=$1 log=$2 pattern=$3 victim start
    until [ -f "$log" ] && grep -q '"step":3,' "$log"; do sleep 0.1; done
    victim=$(pgrep -f "$pattern" | head -1)
    [ -n "$victim" ]
    start=$SECONDS
    kill -9 "$victim"
    status=0
    wait "$pid" || status=$?
    elapsed=$((SECONDS - start))
}

@test "killing one worker (its gradients in small buckets, so mid-bucket) ends the whole run with an error within seconds" {
    train --workers 2 --data "$SAMPLE" --width 0.125 --batch 16 --epochs 3 --threads 1 --run "$T/run" --bucket-mb 0.05 \
        --save-every 2 \
        > "$T/out" 2>&1 &
    kill_mid_run $! "$T/run/log.jsonl" "incv3-step .*--exchange [^ ]*/g1,"
    echo "stopped after ${elapsed}s with status $status: $(tail -1 "$T/out")" >&3
    [ "$status" -ne 0 ]
    [ "$elapsed" -le 10 ]
    grep -q "a worker or the merger failed" "$T/out"
    [ -z "$(pgrep -f "incv3-step .*$T/run" || true)" ]
    [ -z "$(pgrep -f "allreduce-merge .*--rounds" | xargs -r ps -o args= -p | grep "$T" || true)" ]
    # the last checkpoint is whole
    run incv3-ckpt info "$T/run/last.ckpt"
    assert_success
}

@test "workers share the host's cores by default; an explicit --threads that oversubscribes is said once" {
    cores=$(nproc)
    share=$((cores / 2)); [ "$share" -ge 1 ] || share=1
    common=(--data "$SAMPLE" --width 0.125 --batch 16 --limit 320 --test-limit 16 --epochs 1 --workers 2)
    train "${common[@]}" --run "$T/shared" 2> "$T/err" &
    pid=$!
    until pgrep -f "incv3-step .*--exchange [^ ]*/g1," > "$T/pids"; do sleep 0.05; done
    args=$(ps -o args= -p "$(head -1 "$T/pids")")
    [[ "$args" == *"--threads $share "* ]] || fail "worker runs: $args"
    wait $pid
    ! grep -q oversubscribe "$T/err"
    run train "${common[@]}" --threads $((cores + 1)) --limit 32 --run "$T/over"
    assert_success
    [ "$(grep -c "oversubscribe them" <<< "$output")" -eq 1 ]
}

@test "an mpirun rank that dies mid-bucket stops the whole job with an error within seconds" {
    command -v mpirun >/dev/null || skip "OpenMPI is not installed"
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    mpirun --oversubscribe -np 2 "$ROOT/pipelines/train" --mpi --data "$SAMPLE" --width 0.125 --batch 16 \
        --epochs 3 --threads 1 --bucket-mb 0.05 --run "$T/mpi" > "$T/out" 2>&1 &
    kill_mid_run $! "$T/mpi/log.jsonl" "incv3-step -c $T/mpi/rank1.ckpt"
    echo "mpirun stopped after ${elapsed}s with status $status" >&3
    [ "$status" -ne 0 ]
    [ "$elapsed" -le 20 ]
    sleep 1
    [ -z "$(pgrep -f "incv3-step -c $T/mpi" || true)" ]
    [ -z "$(pgrep -f "allreduce-merge --mpi --rounds 3 " || true)" ]
}
