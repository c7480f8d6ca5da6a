# Shared setup of the bats tests: the freshly built tools first on PATH, a
# scratch directory per test, and small generated CIFAR files.
load '/usr/lib/bats/bats-support/load'
load '/usr/lib/bats/bats-assert/load'

ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
export PATH="$ROOT/${INCV3_BUILD:-build}:$ROOT/pipelines:$PATH"
export INCV3_QUIET_BLAS=1
PY=/usr/bin/python3
HELPERS="$ROOT/tests/helpers"
SAMPLE="$ROOT/data/sample"

setup() {
    T="$BATS_TEST_TMPDIR"
}

# make_cifar FILE N [cifar100] : N deterministic records
make_cifar() { "$PY" "$HELPERS/make_cifar.py" "$@"; }

# the stream's records, decompressed and without end markers, as bytes on stdout
raw_stream() { "$PY" "$HELPERS/streams.py" raw "$1"; }

# assert a one-line error starting with the tool's name
assert_one_line_error() {
    local tool=$1
    [ "$(printf '%s\n' "$output" | grep -c .)" -eq 1 ] || fail "expected one line, got: $output"
    [[ "$output" == "$tool: "* ]] || fail "expected '$tool: ...', got: $output"
}
