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
elif rule.startswith("crop-size"):             # crop-size-S: RandomCrop(S, padding=4)
    S = int(rule.split("-")[2])
    assert b.shape == (len(a), 3, S, S), b.shape
    corners = set()
    for i in range(len(a)):
        p = np.zeros((3, 40, 40), np.uint8); p[:, 4:36, 4:36] = a[i]
        found = [(y, x) for y in range(41 - S) for x in range(41 - S) if (p[:, y:y + S, x:x + S] == b[i]).all()]
        assert found, i
        corners |= set(found)
    ys, xs = {c[0] for c in corners}, {c[1] for c in corners}
    assert min(ys) <= 2 and max(ys) >= 38 - S and min(xs) <= 2 and max(xs) >= 38 - S, corners
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

@test "--crop-size: each image is an SxS window of its padded self, anywhere in it; the other stages on the crop" {
    augment --crop 4 --crop-size 24 --seed 7 "$T/in.tz" -o "$T/out.tz"
    run check crop-size-24
    assert_output ok
    # the side of the images themselves draws as --crop alone does
    augment --crop 4 --seed 7 --flip --rotate 15 "$T/in.tz" -o "$T/a.tz"
    augment --crop 4 --crop-size 32 --seed 7 --flip --rotate 15 "$T/in.tz" -o "$T/b.tz"
    cmp "$T/a.tz" "$T/b.tz"
    # flip, rotation, a policy, Cutout, RandomErasing and normalisation work on the crop
    augment --crop 4 --crop-size 20 --flip --rotate 15 --policy trivialaugment --cutout 8 \
        --random-erasing 0.5 --normalize cifar10 --seed 3 "$T/in.tz" -o "$T/c.tz"
    run tensor ls "$T/c.tz"
    assert_output --regexp "x +f32 +\[40,3,20,20\]"
    # a crop larger than the padded image is a data error naming both
    run augment --crop 2 --crop-size 37 "$T/in.tz" -o "$T/d.tz"
    assert_failure 1
    assert_output --partial "a crop of 37x37 does not fit in images of 32x32 padded by 2"
    [ ! -e "$T/d.tz" ]
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

@test "bad options exit 2; normalising f32 images, or a policy on them, is a data error" {
    for args in "--crop -1" "--rotate abc" "--normalize imagenet" "--normalize 1,2/3,4" "--nope" \
                "--crop-size 0" "--crop-size x" "--policy rand" "--policy randaugment:0,9" "--policy randaugment:2,31" "--policy randaugment:2,5,1" \
                "--policy randaugment:2" "--policy randaugment:2.5,9" "--policy trivialaugment:1" \
                "--policy autoaugment:imagenet" "--fill 1,2" "--policy autoaugment --fill 256" \
                "--random-erasing 1.5" "--mixup 0" "--cutmix -1" "--mixup 1 --switch-prob 0.5" \
                "--classes 10"; do
        run augment $args "$T/in.tz"
        assert_failure 2
        assert_one_line_error augment
    done
    augment --normalize cifar10 "$T/in.tz" -o "$T/f.tz"
    for args in "--normalize cifar10" "--policy autoaugment"; do
        run augment $args "$T/f.tz" -o "$T/g.tz"
        assert_failure 1
        assert_one_line_error augment
        [ ! -e "$T/g.tz" ]
    done
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

@test "policies: each changes images, is deterministic, and draws per image whatever the batch or shard" {
    for p in autoaugment randaugment randaugment:3,20 trivialaugment trivialaugment:11; do
        cifar-decode -b 20 --shuffle 4 "$T/a.bin" | augment --crop 4 --flip --policy "$p" --seed 9 > "$T/whole.tz"
        cifar-decode -b 20 --shuffle 4 "$T/a.bin" | augment --crop 4 --flip --policy "$p" --seed 9 > "$T/again.tz"
        cifar-decode -b 10 --shuffle 4 --shard 1/2 "$T/a.bin" | augment --crop 4 --flip --policy "$p" --seed 9 > "$T/shard.tz"
        cifar-decode -b 20 --shuffle 4 "$T/a.bin" | augment --crop 4 --flip --seed 9 > "$T/geo.tz"
        cmp "$T/whole.tz" "$T/again.tz"
        run "$PY" - "$T" <<'PYEOF'
import sys, subprocess, numpy as np
d = sys.argv[1]
for f in ("whole", "shard", "geo"):
    subprocess.run(["tensor", "export", "x", "-o", d + "/" + f + ".npy", d + "/" + f + ".tz"], check=True)
w, s, g = (np.load(d + "/" + f + ".npy") for f in ("whole", "shard", "geo"))
assert (w[10:20] == s).all()
changed = (w != g).any((1, 2, 3)).sum()
assert 5 <= changed, changed            # the policy acted on many images (not all: Identity, p)
print("ok")
PYEOF
        assert_output ok
    done
}

@test "RandomErasing: one rectangle of the mean colour on about half the images" {
    make_cifar "$T/b.bin" 400
    cifar-decode -b 400 "$T/b.bin" -o "$T/in400.tz"
    augment --random-erasing 0.5 --seed 3 "$T/in400.tz" -o "$T/out.tz"
    tensor export x -o "$T/a.npy" "$T/in400.tz"
    tensor export x -o "$T/b.npy" "$T/out.tz"
    run "$PY" - "$T" <<'PYEOF'
import sys, numpy as np
d = sys.argv[1]
a, b = np.load(d + "/a.npy"), np.load(d + "/b.npy")
mean = np.array([125, 123, 114], np.uint8)
erased = 0
for i in range(len(a)):
    changed = (a[i] != b[i]).any(0)
    if not changed.any():
        continue
    erased += 1
    ys, xs = np.nonzero((b[i] == mean[:, None, None]).all(0))
    box = b[i][:, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert (box == mean[:, None, None]).all(), i            # one filled rectangle
    area = box.shape[1] * box.shape[2] / 1024
    assert 0.01 <= area <= 0.36, (i, area)                   # 2% to 33% of the image, rounded
print(150 <= erased <= 250)
PYEOF
    assert_output True
}

@test "MixUp and CutMix: soft targets summing to 1, y the most probable class, images mixed as they say" {
    cifar-decode -b 40 "$T/a.bin" -o "$T/b20.tz"
    augment --mixup 0.4 --seed 2 "$T/b20.tz" -o "$T/mixup.tz"
    augment --cutmix 1 --seed 2 "$T/b20.tz" -o "$T/cutmix.tz"
    augment --mixup 0.4 --seed 2 "$T/b20.tz" -o "$T/again.tz"
    cmp "$T/mixup.tz" "$T/again.tz"
    for f in b20 mixup cutmix; do
        tensor export x -o "$T/$f.x.npy" "$T/$f.tz"
        tensor export y -o "$T/$f.y.npy" "$T/$f.tz"
    done
    for f in mixup cutmix; do tensor export soft -o "$T/$f.soft.npy" "$T/$f.tz"; done
    run "$PY" - "$T" <<'PYEOF'
import sys, numpy as np
d = sys.argv[1]
x, y = np.load(d + "/b20.x.npy").astype(np.float64), np.load(d + "/b20.y.npy")
for kind in ("mixup", "cutmix"):
    xm, ym, t = np.load(d + "/%s.x.npy" % kind), np.load(d + "/%s.y.npy" % kind), np.load(d + "/%s.soft.npy" % kind)
    assert t.shape == (40, 10) and np.allclose(t.sum(1), 1, atol=1e-6) and (t >= 0).all()
    assert (ym == t.argmax(1)).all()
    for i in range(40):
        j = (i - 1) % 40                                 # the image before it in the batch
        lam = t[i, y[i]] if y[i] != y[j] else None
        if lam is None:
            continue
        if kind == "mixup":                              # lambda x_i + (1 - lambda) x_j, rounded
            assert np.abs(xm[i] - (lam * x[i] + (1 - lam) * x[j])).max() <= 0.5 + 1e-3, i
        else:                                            # a box of x_j covering 1 - lambda of the image
            from_j = (xm[i] == x[j]).all(0) & (x[i] != x[j]).any(0)
            assert abs(from_j.mean() - (1 - lam)) < 0.05, (i, from_j.mean(), lam)
print("ok")
PYEOF
    assert_output ok
}

@test "soft targets: incv3-step trains on them and checks them; evaluate says it does not score them" {
    cifar-decode -b 20 "$T/a.bin" | augment --mixup 1 --cutmix 1 --seed 1 > "$T/mix.tz"
    incv3-step -c "$T/m.ckpt" --width 0.125 --quiet --log "$T/log" "$T/mix.tz"
    grep -q '"event":"train_epoch"' "$T/log"
    run sh -c "incv3-step --eval -c '$T/m.ckpt' '$T/mix.tz' | evaluate"
    assert_success
    assert_output --partial "soft targets (record 'soft', MixUp/CutMix) are not scored"
    # soft targets of the wrong width, or not summing to 1: one line, exit 1, no checkpoint
    cifar-decode -b 20 "$T/a.bin" | augment --mixup 1 --classes 12 > "$T/k12.tz"
    run incv3-step -c "$T/new.ckpt" --width 0.125 --quiet --log /dev/null "$T/k12.tz"
    assert_failure 1
    assert_one_line_error incv3-step
    assert_output --partial "record 'soft'"
    [ ! -e "$T/new.ckpt" ]
    "$PY" - "$T" <<'PYEOF'
import sys
sys.path.insert(0, "tests/helpers")
import numpy as np
from streams import END, record
d = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
t = np.full((4, 10), 0.1, np.float32)
t[2] *= 2                                               # sums to 2
y = np.arange(4, dtype=np.int64)
open(d + "/bad.tz", "wb").write(record("x", x) + record("soft", t) + record("y", y) + END)
PYEOF
    run incv3-step -c "$T/new.ckpt" --width 0.125 --quiet --log /dev/null "$T/bad.tz"
    assert_failure 1
    assert_one_line_error incv3-step
    assert_output --partial "image 2 are not probabilities summing to 1"
    [ ! -e "$T/new.ckpt" ]
}

@test "MixUp needs the labels: an x without its y is a data error" {
    tensor export x -o "$T/x.npy" "$T/in.tz"
    tensor import x "$T/x.npy" -o "$T/x.tz"
    run augment --mixup 1 "$T/x.tz" -o "$T/out.tz"
    assert_failure 1
    assert_one_line_error augment
    assert_output --partial "no y"
    [ ! -e "$T/out.tz" ]
}
