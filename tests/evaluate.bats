#!/usr/bin/env bats
# evaluate: accuracy, loss, per-class accuracy and the confusion matrix.

load helpers/common

@test "evaluate: accuracy, loss, per-class accuracy and confusion matrix, --json" {
    "$PY" - "$T/l.tz" <<'PYEOF'
import sys, numpy as np
sys.path.insert(0, "tests/helpers")
from streams import record, END
logits = np.full((4, 3), -5.0, np.float32)
logits[0, 0] = logits[1, 1] = logits[2, 1] = logits[3, 2] = 5.0   # predictions 0 1 1 2
y = np.array([0, 1, 2, 2], np.int64)
open(sys.argv[1], "wb").write(record("logits", logits) + record("y", y) + END)
PYEOF
    printf 'cat\ndog\nfrog\n' > "$T/names"
    run evaluate --names "$T/names" "$T/l.tz"
    assert_success
    assert_line "top-1 75.00%"
    assert_line "top-5 100.00%"
    assert_line --regexp "^  frog +50.00%"
    run evaluate --json "$T/l.tz"
    assert_output --partial '"images":4,"top1":0.750000,"top5":1.000000'
    assert_output --partial '"confusion":[[1,0,0],[0,1,0],[0,1,1]]'
}
