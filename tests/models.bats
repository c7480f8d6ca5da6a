#!/usr/bin/env bats
# models/: the shipped trained model scores what its card says, in incv3 and in PyTorch.
# An inference regression (kernels, layout, the importer) changes the exact count.

load helpers/common

MODEL="$ROOT/models/incv3-cifar10-w025"

# card NAME: a number of the card's metrics file
card() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p" "$MODEL.json"; }

@test "the shipped model scores the card's top-1 on the sample's 1,000 test images, exactly" {
    incv3-ckpt import "$MODEL.safetensors" -o "$T/m.ckpt"
    run incv3-ckpt info "$T/m.ckpt"
    assert_line "width 0.25"
    assert_line "classes 10"
    cifar-decode -b 500 "$SAMPLE/test_batch.bin.zst" | incv3-step --eval -c "$T/m.ckpt" \
        | evaluate --json > "$T/e.json"
    got=$(sed 's/.*"top1":\([0-9.]*\).*/\1/' "$T/e.json")
    want=$(card sample_top1)
    [ -n "$want" ] && [ "$got" = "$want" ] || fail "top-1 $got on the sample, the card says $want"
}

@test "the shipped model loads into the PyTorch model strictly and scores the same top-1 there" {
    "$PY" -c "import torch" 2>/dev/null || skip "python3-torch is not installed"
    run "$PY" - "$MODEL.safetensors" "$SAMPLE/test_batch.bin.zst" <<'PYEOF'
import sys, subprocess
import numpy as np, torch
sys.path[:0] = ["tests/pytorch", "tests/helpers"]
from inceptionv3 import InceptionV3
from compare_weights import load
state = {k: torch.from_numpy(v.copy()) for k, v in load(sys.argv[1]).items()}
model = InceptionV3(10, 0.25)
model.load_state_dict(state, strict=True)
model.eval()
data = subprocess.run(["zstd", "-dc", sys.argv[2]], capture_output=True, check=True).stdout
rec = np.frombuffer(data, np.uint8).reshape(-1, 3073)
labels = torch.from_numpy(rec[:, 0].astype(np.int64))
x = torch.from_numpy(rec[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255)
mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
with torch.no_grad():
    pred = torch.cat([model((x[i:i + 250] - mean) / std).argmax(1) for i in range(0, len(x), 250)])
print("%.6f" % (pred == labels).float().mean().item())
PYEOF
    assert_success
    [ "$output" = "$(card sample_top1)" ] || fail "PyTorch: top-1 $output, the card says $(card sample_top1)"
}
