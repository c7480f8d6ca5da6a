/* test_imageops - the image operations of the augmentation policies against
 * torchvision 0.14 (tests/fixtures/imageops.tz, from
 * tests/pytorch/make_imageops_fixture.py): every operation at magnitudes from the
 * policies' tables, both signs, three and one channels, default and colour fill;
 * the magnitude tables and AutoAugment's CIFAR-10 policy entry by entry; and the
 * policies' draws against their tables by sampling. */
#include "check.h"
#include "fixture.h"
#include "imageops.h"

/* Largest difference from torchvision per operation, in grey levels: none. imageops.c
 * follows torchvision's float32 arithmetic step by step, Sharpness's blur too (its
 * sums in the order PyTorch's CPU convolution took them for this fixture). */
static int bound(ImageOp op) { return 0; }

static const Record *find(const char *name) {
    for (int i = 0; i < nrecs; i++) if (!strcmp(recs[i].name, name)) return &recs[i];
    return NULL;
}

static ImageOp op_named(const char *name) {
    for (int k = 0; k < IMOP_COUNT; k++) if (!strcmp(IMAGE_OP_NAMES[k], name)) return (ImageOp)k;
    fprintf(stderr, "unknown operation %s\n", name);
    exit(1);
}

/* Applies op to every image of `in` and returns the largest difference from want. */
static int apply_all(ImageOp op, float mag, const Record *in, const Record *want, const uint8_t *fill,
                     long *differing) {
    int B = (int)in->dims[0], C = (int)in->dims[1], H = (int)in->dims[2], W = (int)in->dims[3];
    size_t n = (size_t)C * H * W;
    uint8_t *img = malloc(n), *scratch = malloc(2 * n);
    int worst = 0;
    for (int b = 0; b < B; b++) {
        memcpy(img, (const uint8_t *)in->data + b * n, n);
        image_op(op, mag, img, C, H, W, fill, scratch);
        const uint8_t *w = (const uint8_t *)want->data + b * n;
        for (size_t p = 0; p < n; p++) {
            int d = abs((int)img[p] - (int)w[p]);
            if (d) (*differing)++;
            if (d > worst) worst = d;
        }
    }
    free(img); free(scratch);
    return worst;
}

static void check_operations(void) {
    const Record *x = fx("images"), *x1 = fx("images1");
    const float *fillf = fx("fill")->data;
    uint8_t fill[3] = { (uint8_t)fillf[0], (uint8_t)fillf[1], (uint8_t)fillf[2] };
    for (int op = 0; op < IMOP_COUNT; op++) {
        int cases = 0, worst = 0;
        long differing = 0, pixels = 0;
        for (int k = 0;; k++) {
            char name[96];
            snprintf(name, sizeof name, "mag.%s.%d", IMAGE_OP_NAMES[op], k);
            const Record *mag = find(name);
            if (!mag) break;
            float m = *(const float *)mag->data;
            const char *kinds[] = { "out", "out1", "fill" };
            for (int v = 0; v < 3; v++) {
                snprintf(name, sizeof name, "%s.%s.%d", kinds[v], IMAGE_OP_NAMES[op], k);
                const Record *want = find(name);
                if (!want) continue;
                long diff = 0;
                int d = apply_all((ImageOp)op, m, v == 1 ? x1 : x, want, v == 2 ? fill : NULL, &diff);
                CHECK(d <= bound((ImageOp)op), "%s(%g) %s: %ld values differ, by up to %d",
                      IMAGE_OP_NAMES[op], m, kinds[v], diff, d);
                if (d > worst) worst = d;
                differing += diff;
                pixels += want->nelem;
                cases++;
            }
        }
        CHECK(cases > 0, "the fixture has no case of %s", IMAGE_OP_NAMES[op]);
        printf("%-12s %2d cases: %ld of %ld values differ from torchvision, by at most %d (bound %d)\n",
               IMAGE_OP_NAMES[op], cases, differing, pixels, worst, bound((ImageOp)op));
    }
}

static void check_tables(void) {
    static const struct { const char *space; PolicyKind kind; int bins; } spaces[] = {
        { "auto", POLICY_AUTOAUGMENT, 10 }, { "rand", POLICY_RANDAUGMENT, 31 },
        { "wide", POLICY_TRIVIALAUGMENT, 31 } };
    for (int s = 0; s < 3; s++) {
        const ImageOp *ops;
        int nops = policy_ops(spaces[s].kind, &ops), found = 0, entries = 0;
        for (int i = 0; i < nrecs; i++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "table.%s.", spaces[s].space);
            if (strncmp(recs[i].name, prefix, strlen(prefix))) continue;
            ImageOp op = op_named(recs[i].name + strlen(prefix));
            int listed = 0;
            for (int k = 0; k < nops; k++) listed |= ops[k] == op;
            CHECK(listed, "%s: torchvision's space has %s, ours does not", spaces[s].space, IMAGE_OP_NAMES[op]);
            found++;
            char sname[64];
            snprintf(sname, sizeof sname, "signed.%s.%s", spaces[s].space, IMAGE_OP_NAMES[op]);
            int want_signed = *(const uint8_t *)fx(sname)->data, is_signed = 0;
            const float *t = recs[i].data;
            int n = (int)recs[i].nelem;
            for (int b = 0; b < (n > 1 ? n : 1); b++) {
                float m = policy_magnitude(spaces[s].kind, op, spaces[s].bins, b, 32, 32, &is_signed);
                CHECK(m == t[b], "%s %s bin %d: %.9g, torchvision %.9g", spaces[s].space,
                      IMAGE_OP_NAMES[op], b, m, t[b]);
                entries++;
            }
            if (n > 1) CHECK(n == spaces[s].bins, "%s %s: %d bins", spaces[s].space, IMAGE_OP_NAMES[op], n);
            CHECK(is_signed == want_signed, "%s %s: signed %d, torchvision %d", spaces[s].space,
                  IMAGE_OP_NAMES[op], is_signed, want_signed);
        }
        CHECK(found == nops, "%s: torchvision's space has %d operations, ours %d", spaces[s].space, found, nops);
        printf("magnitude table %s: %d operations, %d entries equal to torchvision's\n",
               spaces[s].space, found, entries);
    }
    int entries = 0;
    for (int i = 0; i < nrecs; i++) {
        int sub, j, len = 0;
        if (sscanf(recs[i].name, "cifar10.%d.%d.%n", &sub, &j, &len) != 2 || !len) continue;
        const float *pb = recs[i].data;
        const SubPolicyOp *o = &AUTOAUGMENT_CIFAR10[sub][j];
        CHECK(o->op == op_named(recs[i].name + len) && o->p == pb[0] && o->bin == (int)pb[1],
              "AutoAugment CIFAR-10 sub-policy %d op %d: %s %g %d, torchvision %s %g %g", sub, j,
              IMAGE_OP_NAMES[o->op], o->p, o->bin, recs[i].name + len, pb[0], pb[1]);
        entries++;
    }
    CHECK(entries == 50, "AutoAugment's CIFAR-10 policy: %d entries in the fixture", entries);
    printf("AutoAugment CIFAR-10 policy: %d entries equal to torchvision's\n", entries);
}

/* |count - expected| within 5 standard deviations of a binomial count */
static int plausible(long count, long n, double p) {
    return fabs(count - n * p) <= 5 * sqrt(n * p * (1 - p)) + 1;
}

static void check_draws(void) {
    enum { N = 200000 };
    Rng rng;
    PolicyStep steps[POLICY_MAX_OPS];
    const ImageOp *ops;
    policy_ops(POLICY_RANDAUGMENT, &ops);

    /* RandAugment(2, 9, 31): each op uniformly, magnitude bin 9, signs halved */
    Policy ra = { POLICY_RANDAUGMENT, 2, 9, 31 };
    long count[IMOP_COUNT] = { 0 }, negative[IMOP_COUNT] = { 0 }, wrong = 0, total = 0;
    rng_seed(&rng, 1, 0);
    for (int i = 0; i < N; i++) {
        int n = policy_draw(&ra, &rng, 32, 32, steps);
        CHECK(n == 2, "RandAugment drew %d ops", n);
        for (int k = 0; k < n; k++) {
            int s;
            float m = policy_magnitude(POLICY_RANDAUGMENT, steps[k].op, 31, 9, 32, 32, &s);
            wrong += fabsf(steps[k].magnitude) != m;
            count[steps[k].op]++;
            negative[steps[k].op] += steps[k].magnitude < 0;
            total++;
        }
    }
    int bad = 0;
    for (int k = 0; k < 14; k++) {
        int s;
        policy_magnitude(POLICY_RANDAUGMENT, ops[k], 31, 9, 32, 32, &s);
        bad += !plausible(count[ops[k]], total, 1.0 / 14);
        if (s) bad += !plausible(negative[ops[k]], count[ops[k]], 0.5);
        else bad += negative[ops[k]] != 0;
    }
    CHECK(!bad && !wrong && count[IMOP_INVERT] == 0, "RandAugment: %d frequencies off, %ld magnitudes off", bad, wrong);

    /* TrivialAugmentWide: each op uniformly, bins uniformly over 31 */
    Policy ta = { POLICY_TRIVIALAUGMENT, 1, 0, 31 };
    long bins[31] = { 0 }, rotations = 0;
    memset(count, 0, sizeof count);
    wrong = 0;
    for (int i = 0; i < N; i++) {
        policy_draw(&ta, &rng, 32, 32, steps);
        count[steps[0].op]++;
        if (steps[0].op == IMOP_ROTATE) {
            int s, b = 0;
            while (b < 31 && policy_magnitude(POLICY_TRIVIALAUGMENT, IMOP_ROTATE, 31, b, 32, 32, &s) != fabsf(steps[0].magnitude)) b++;
            if (b < 31) bins[b]++; else wrong++;
            rotations++;
        }
    }
    bad = 0;
    for (int k = 0; k < 14; k++) bad += !plausible(count[ops[k]], N, 1.0 / 14);
    for (int b = 0; b < 31; b++) bad += !plausible(bins[b], rotations, 1.0 / 31);
    CHECK(!bad && !wrong, "TrivialAugmentWide: %d frequencies off, %ld magnitudes off the table", bad, wrong);

    /* AutoAugment CIFAR-10: each (op, magnitude) as often as the sub-policies say */
    Policy aa = { POLICY_AUTOAUGMENT, 2, 0, 10 };
    struct { ImageOp op; float mag; double p; long n; } seen[64];
    int nseen = 0;
    for (int s = 0; s < 25; s++)
        for (int j = 0; j < 2; j++) {
            const SubPolicyOp *o = &AUTOAUGMENT_CIFAR10[s][j];
            int sg;
            float m = o->bin < 0 ? 0.0f : policy_magnitude(POLICY_AUTOAUGMENT, o->op, 10, o->bin, 32, 32, &sg);
            int k = 0;
            while (k < nseen && !(seen[k].op == o->op && seen[k].mag == m)) k++;
            if (k == nseen) seen[nseen++] = (typeof(seen[0])){ o->op, m, 0, 0 };
            seen[k].p += o->p / 25.0;
        }
    wrong = 0;
    for (int i = 0; i < N; i++) {
        int n = policy_draw(&aa, &rng, 32, 32, steps);
        for (int k = 0; k < n; k++) {
            int q = 0;
            while (q < nseen && !(seen[q].op == steps[k].op && seen[q].mag == fabsf(steps[k].magnitude))) q++;
            if (q < nseen) seen[q].n++; else wrong++;
        }
    }
    bad = 0;
    for (int q = 0; q < nseen; q++) bad += !plausible(seen[q].n, N, seen[q].p);
    CHECK(!bad && !wrong, "AutoAugment: %d of %d (op, magnitude) frequencies off, %ld draws off the policy",
          bad, nseen, wrong);
    printf("policy draws: RandAugment, TrivialAugmentWide, AutoAugment (%d op-magnitude pairs) "
           "within 5 standard deviations of their tables over %d images each\n", nseen, N);
}

int main(void) {
    fixture_read("tests/fixtures/imageops.tz");
    check_tables();
    check_operations();
    check_draws();
    return check_summary("imageops");
}
