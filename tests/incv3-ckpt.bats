#!/usr/bin/env bats
# incv3-ckpt: checkpoints, their info, and safetensors to and from PyTorch.

load helpers/common

setup() {
    T="$BATS_TEST_TMPDIR"
    TRAIN="$SAMPLE/data_batch_1.bin.zst"
}

@test "checkpoint round trip: save, load, identical forward; info reports the model" {
    cifar-decode -b 16 --limit 32 "$TRAIN" | incv3-step -c "$T/m.ckpt" --width 0.125 --log /dev/null
    cifar-decode -b 16 --limit 32 "$SAMPLE/test_batch.bin.zst" -o "$T/t.tz"
    incv3-step --eval -c "$T/m.ckpt" "$T/t.tz" -o "$T/a.tz"
    # through safetensors and back: the same forward, bit for bit
    incv3-ckpt export "$T/m.ckpt" "$T/m.safetensors"
    incv3-ckpt import "$T/m.safetensors" -o "$T/back.ckpt"
    incv3-step --eval -c "$T/back.ckpt" "$T/t.tz" -o "$T/b.tz"
    cmp "$T/a.tz" "$T/b.tz"
    incv3-ckpt export "$T/back.ckpt" "$T/back.safetensors"
    cmp "$T/m.safetensors" "$T/back.safetensors"
    run incv3-ckpt info "$T/m.ckpt"
    assert_line "classes 10"
    assert_line "width 0.125"
    assert_line "step 2"
}

@test "full-width parameter and batch-norm counts are those of the PyTorch model (tests/pytorch/)" {
    incv3-ckpt init -o "$T/k10.ckpt"
    incv3-ckpt init --classes 100 -o "$T/k100.ckpt"
    run incv3-ckpt info "$T/k10.ckpt"
    assert_line "parameters 22133738"
    assert_line "batchnorms 94"
    run incv3-ckpt info "$T/k100.ckpt"
    assert_line "parameters 22318148"
}

@test "PyTorch names: a safetensors export loads into the PyTorch model strictly" {
    "$PY" -c "import torch" 2>/dev/null || skip "python3-torch is not installed"
    incv3-ckpt init --width 0.25 --aux --seed 1 -o "$T/m.ckpt"
    incv3-ckpt export "$T/m.ckpt" "$T/m.safetensors"
    run "$PY" - "$T/m.safetensors" <<'PYEOF'
import sys, torch
sys.path[:0] = ["tests/pytorch", "tests/helpers"]
from inceptionv3 import InceptionV3
from compare_weights import load
state = {k: torch.from_numpy(v.copy()) for k, v in load(sys.argv[1]).items()}
model = InceptionV3(10, 0.25, aux=True)
model.load_state_dict(state, strict=True)
print("loaded", len(state))
PYEOF
    assert_success
    assert_output --regexp "^loaded [0-9]+$"
}

@test "a PyTorch state_dict saved as safetensors imports and trains" {
    "$PY" -c "import torch" 2>/dev/null || skip "python3-torch is not installed"
    "$PY" - "$T/pt.safetensors" <<'PYEOF'
import sys, json, struct, torch
sys.path.insert(0, "tests/pytorch")
from inceptionv3 import InceptionV3
torch.manual_seed(0)
sd = InceptionV3(10, 0.125).state_dict()
header, blobs, off = {}, [], 0
for k, v in sd.items():
    b = v.contiguous().numpy().tobytes()
    header[k] = {"dtype": "F32" if v.dtype == torch.float32 else "I64", "shape": list(v.shape),
                 "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(header).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PYEOF
    incv3-ckpt import --width 0.125 "$T/pt.safetensors" -o "$T/m.ckpt"
    run bash -c "cifar-decode -b 16 --limit 32 '$TRAIN' | incv3-step -c '$T/m.ckpt' | tail -1"
    assert_success
    assert_output --partial '"event":"train_epoch"'
}

@test "checkpoints of another shape or kind are refused with the tensor named" {
    incv3-ckpt init --width 0.125 -o "$T/a.ckpt"
    incv3-ckpt export "$T/a.ckpt" "$T/a.safetensors"
    run incv3-ckpt import --width 0.25 "$T/a.safetensors" -o "$T/b.ckpt"
    assert_failure 1
    assert_one_line_error incv3-ckpt
    assert_output --partial "Conv2d_1a_3x3.conv.weight"
    [ ! -e "$T/b.ckpt" ]
    make_cifar "$T/x.bin" 2
    run incv3-ckpt info "$T/x.bin"
    assert_failure 1
    assert_one_line_error incv3-ckpt
}
