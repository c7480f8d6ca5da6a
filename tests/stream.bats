#!/usr/bin/env bats
# The tensor stream: pipes, FIFOs, files, pass-through, compression, malformed input.

load helpers/common

@test "a stream survives a pipe, a FIFO and a file alike" {
    make_cifar "$T/a.bin" 64
    cifar-decode -b 16 "$T/a.bin" -o "$T/file.tz"
    cifar-decode -b 16 "$T/a.bin" | augment --flip --seed 1 > "$T/pipe.tz"
    mkfifo "$T/fifo"
    cifar-decode -b 16 "$T/a.bin" > "$T/fifo" &
    augment --flip --seed 1 "$T/fifo" > "$T/fromfifo.tz"
    wait
    augment --flip --seed 1 "$T/file.tz" > "$T/fromfile.tz"
    [ "$(raw_stream "$T/pipe.tz" | sha256sum)" = "$(raw_stream "$T/fromfifo.tz" | sha256sum)" ]
    [ "$(raw_stream "$T/pipe.tz" | sha256sum)" = "$(raw_stream "$T/fromfile.tz" | sha256sum)" ]
}

@test "records a filter does not know pass through unchanged and in order" {
    "$PY" - "$T/in.tz" <<'PYEOF'
import sys, numpy as np
sys.path.insert(0, "tests/helpers")
from streams import record, END
recs = [record("note", np.frombuffer(b"hello", np.uint8)),
        record("x", np.arange(2 * 3 * 32 * 32, dtype=np.int64).astype(np.uint8).reshape(2, 3, 32, 32)),
        record("weights", np.linspace(0, 1, 7, dtype=np.float32)),
        record("y", np.array([1, 2], np.int64))]
open(sys.argv[1], "wb").write(b"".join(recs) + END)
PYEOF
    run bash -c "augment --crop 2 --seed 3 '$T/in.tz' | tensor ls | awk 'NR > 1 { print \$1 }' | paste -sd ' '"
    assert_output "note x weights y"
    augment --crop 2 --seed 3 "$T/in.tz" > "$T/out.tz"
    for name in note weights y; do
        [ "$("$PY" "$HELPERS/streams.py" load "$T/in.tz" $name 0)" = "$("$PY" "$HELPERS/streams.py" load "$T/out.tz" $name 0)" ]
    done
}

@test "readers take compressed and raw input; --level and --raw shape the output" {
    make_cifar "$T/a.bin" 32
    cifar-decode "$T/a.bin" -o "$T/z.tz"
    cifar-decode --raw "$T/a.bin" -o "$T/r.tz"
    cifar-decode --level 19 "$T/a.bin" -o "$T/z19.tz"
    [ "$(head -c 4 "$T/r.tz")" = "IV3T" ]
    [ "$(head -c 4 "$T/z.tz" | od -An -tx1 | tr -d ' ')" = "28b52ffd" ]
    [ "$(stat -c %s "$T/z19.tz")" -le "$(stat -c %s "$T/z.tz")" ]
    [ "$(raw_stream "$T/r.tz" | sha256sum)" = "$(raw_stream "$T/z19.tz" | sha256sum)" ]
    run bash -c "tensor ls '$T/r.tz' | grep -c '^x '"
    assert_output 1
}

@test "malformed streams: one line naming what and where, exit 1" {
    C="$ROOT/tests/corpus/stream"
    for f in "$C"/*.tz; do
        run tensor ls "$f"
        assert_failure 1
        [ "$(printf '%s\n' "$output" | grep -c '^tensor: ')" -eq 1 ] || fail "$f: $output"
        [[ "$output" == *"$f"* ]] || fail "$f is not named: $output"
    done
    run tensor ls "$C/bad-magic.tz"
    assert_output --partial "bad magic at byte 0"
    run tensor ls "$C/unknown-dtype.tz"
    assert_output --partial "unknown dtype 77"
    run tensor ls "$C/rank-over-8.tz"
    assert_output --partial "rank 9"
    run tensor ls "$C/dims-overflow-64-bits.tz"
    assert_output --partial "overflows"
    run tensor ls "$C/header-promises-more-than-payload.tz"
    assert_output --partial "payload truncated"
    run tensor ls "$C/no-end-record.tz"
    assert_output --partial "without an end record"
    run tensor ls "$C/empty.tz"
    assert_output --partial "empty stream"
}

@test "a corrupted or truncated zstd frame is an error, never a clean end" {
    make_cifar "$T/a.bin" 64
    cifar-decode -b 16 "$T/a.bin" -o "$T/z.tz"
    size=$(stat -c %s "$T/z.tz")
    head -c $((size - 9)) "$T/z.tz" > "$T/cut.tz"
    run bash -c "augment '$T/cut.tz' > /dev/null"
    assert_failure 1
    assert_one_line_error augment
    assert_output --partial "truncated"
    cp "$T/z.tz" "$T/flip.tz"
    printf '\xff\xff\xff\xff' | dd of="$T/flip.tz" bs=1 seek=$((size / 2)) conv=notrunc status=none
    run augment "$T/flip.tz" -o "$T/out.tz"
    assert_failure 1
    assert_one_line_error augment
    [ ! -e "$T/out.tz" ]
}

@test "an upstream stage that dies makes the downstream stage fail" {
    make_cifar "$T/a.bin" 64
    cifar-decode -b 8 --raw "$T/a.bin" -o "$T/r.tz"
    run bash -c "set -o pipefail; head -c 20000 '$T/r.tz' | augment --flip > /dev/null"
    assert_failure 1
    assert_output --partial "augment: "
}
