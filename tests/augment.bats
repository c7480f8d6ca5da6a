#!/usr/bin/env bats
# augment: exact crops and flips, rotation by 0, exact normalisation, determinism.

load helpers/common

setup() {
    T="$BATS_TEST_TMPDIR"
    make_cifar "$T/a.bin" 40
    cifar-decode -b 40 "$T/a.bin" -o "$T/in.tz"
    tensor export x -o "$T/in.npy" "$T/in.tz"
}

# check.py: compare $T/in.npy with $T/out.npy under a rule
check() {
    tensor export x -o "$T/out.npy" "$T/out.tz"
    "$PY" - "$T" "$1" <<'PYEOF'
import sys, numpy as np
d, rule = sys.argv[1], sys.argv[2]
a, b = np.load(d + "/in.npy"), np.load(d + "/out.npy")
if rule == "crop":
    shifts = set()
    for i in range(len(a)):
        found = None
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                p = np.zeros((3, 40, 40), np.uint8); p[:, 4:36, 4:36] = a[i]
                if (p[:, 4 + dy:36 + dy, 4 + dx:36 + dx] == b[i]).all():
                    found = (dy, dx)
        assert found is not None, i
        shifts.add(found)
    assert len(shifts) > 5, shifts
elif rule == "flip":
    kinds = set()
    for i in range(len(a)):
        same, mirrored = (a[i] == b[i]).all(), (a[i][:, :, ::-1] == b[i]).all()
        assert same or mirrored, i
        kinds.add(bool(mirrored))
    assert kinds == {True, False}, kinds
elif rule == "identity":
    assert (a == b).all()
elif rule == "rotate":
    zero_corners = sum(int((b[i][:, 0, 0] == 0).all()) for i in range(len(a)))
    assert zero_corners > 10, zero_corners          # corners rotate in from outside
    for i in range(len(a)):                         # nearest: every value comes from the image
        assert set(np.unique(b[i])) <= set(np.unique(a[i])) | {0}, i
elif rule == "normalize":
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32)[None, :, None, None]
    std = np.array([0.2470, 0.2435, 0.2616], np.float32)[None, :, None, None]
    want = (a.astype(np.float32) / np.float32(255) - mean) / std
    assert b.dtype == np.float32 and (b == want).all(), np.abs(b - want).max()
print("ok")
PYEOF
}

@test "crop with zero padding: each image is its padded self shifted by at most 4" {
    augment --crop 4 --seed 7 "$T/in.tz" -o "$T/out.tz"
    run check crop
    assert_output ok
}

@test "flip: each image is itself or its mirror, and both happen" {
    augment --flip --seed 7 "$T/in.tz" -o "$T/out.tz"
    run check flip
    assert_output ok
}

@test "rotation by 0 is the identity; rotation fills with 0 and takes nearest pixels" {
    augment --rotate 0 --seed 7 "$T/in.tz" -o "$T/out.tz"
    run check identity
    assert_output ok
    augment --rotate 15 --seed 7 "$T/in.tz" -o "$T/out.tz"
    run check rotate
    assert_output ok
}

@test "normalisation is exactly (x/255 - mean)/std in float32" {
    augment --normalize cifar10 "$T/in.tz" -o "$T/out.tz"
    run check normalize
    assert_output ok
    augment --normalize 0.4914,0.4822,0.4465/0.2470,0.2435,0.2616 "$T/in.tz" -o "$T/out2.tz"
    cmp "$T/out.tz" "$T/out2.tz"
}

@test "same seed and epoch give the same bytes; another epoch or seed does not" {
    all="--crop 4 --flip --rotate 15 --normalize cifar10"
    augment $all --seed 1 --epoch 3 "$T/in.tz" -o "$T/a.tz"
    augment $all --seed 1 --epoch 3 "$T/in.tz" -o "$T/b.tz"
    augment $all --seed 1 --epoch 4 "$T/in.tz" -o "$T/c.tz"
    augment $all --seed 2 --epoch 3 "$T/in.tz" -o "$T/d.tz"
    cmp "$T/a.tz" "$T/b.tz"
    run cmp -s "$T/a.tz" "$T/c.tz"
    assert_failure
    run cmp -s "$T/a.tz" "$T/d.tz"
    assert_failure
}

@test "an image is augmented alike whichever shard or batch carries it" {
    all="--crop 4 --flip --rotate 15 --normalize cifar10 --seed 9"
    cifar-decode -b 20 --shuffle 4 "$T/a.bin" | augment $all > "$T/whole.tz"
    cifar-decode -b 10 --shuffle 4 --shard 1/2 "$T/a.bin" | augment $all > "$T/shard.tz"
    run "$PY" - "$T" <<'PYEOF'
import sys, subprocess, numpy as np
d = sys.argv[1]
subprocess.run(["tensor", "export", "x", "-o", d + "/w.npy", d + "/whole.tz"], check=True)
subprocess.run(["tensor", "export", "x", "-o", d + "/s.npy", d + "/shard.tz"], check=True)
print((np.load(d + "/w.npy")[10:20] == np.load(d + "/s.npy")).all())
PYEOF
    assert_output True
}

@test "bad options exit 2; normalising f32 images is a data error" {
    for args in "--crop -1" "--rotate abc" "--normalize imagenet" "--normalize 1,2/3,4" "--nope"; do
        run augment $args "$T/in.tz"
        assert_failure 2
        assert_one_line_error augment
    done
    augment --normalize cifar10 "$T/in.tz" -o "$T/f.tz"
    run augment --normalize cifar10 "$T/f.tz" -o "$T/g.tz"
    assert_failure 1
    assert_one_line_error augment
    [ ! -e "$T/g.tz" ]
}

@test "Cutout: one square of the mean colour per image, clipped at the borders, centred anywhere; the crops as without it" {
    augment --cutout 16 --seed 5 "$T/in.tz" -o "$T/out.tz"
    augment --cutout 16 --crop 4 --flip --seed 5 "$T/in.tz" -o "$T/both.tz"
    augment --crop 4 --flip --seed 5 "$T/in.tz" -o "$T/geo.tz"
    augment --cutout 16 --normalize cifar10 --seed 5 "$T/in.tz" -o "$T/norm.tz"
    for f in out both geo norm; do tensor export x -o "$T/$f.npy" "$T/$f.tz"; done
    "$PY" - "$T" <<'PYEOF'
import sys, numpy as np
d = sys.argv[1]
a, b = np.load(d + "/in.npy"), np.load(d + "/out.npy")
mean = np.array([125, 123, 114], np.uint8)       # round(255 * CIFAR-10's mean)
clipped = 0
for i in range(len(a)):
    filled = (b[i] == mean[:, None, None]).all(0)
    changed = (a[i] != b[i]).any(0)
    assert not (changed & ~filled).any(), i      # only the square changes
    ys, xs = np.nonzero(changed)
    h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
    assert h <= 16 and w <= 16, (i, h, w)        # one square of side 16 at most
    clipped += h < 16 or w < 16
assert 0 < clipped < len(a), clipped             # some squares cut by a border, not all
# with crop and flip too: outside the square, exactly the crop and flip alone
g, c = np.load(d + "/geo.npy"), np.load(d + "/both.npy")
same = (g == c).all(1)
assert same.mean() > 0.7 and same.mean() < 1, same.mean()
# normalised: 0 in the square, exactly
n = np.load(d + "/norm.npy")
assert ((n == 0).all(1).sum((1, 2)) >= 64).all()
PYEOF
    run augment --cutout 0 "$T/in.tz"
    assert_failure 2
}
