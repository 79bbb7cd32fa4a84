/* Classical RK4 over a dense-form layer (at most DENSE_MAX_NODES nodes), every lane busy at every
 * batch size.
 *
 * Per device e:  z = c_e + sum_j a_ej v_j,  y = kernel(z),  g = feature(y),
 *                dv_j/dt += k_ej y,  dl/dt += w_e g
 * (models.engine_layers.dense_weights folds the FusedForm's constants into a, c, k, w and the
 * per-row offsets into Layer.bias). A vector of LANES lanes carries either 16 rows of one device
 * (level 0: 16-row blocks, weights broadcast from one float) or, for the few rows of a small
 * request, 16 >> level rows of 1 << level devices at once (level p > 0, weights stored per lane):
 * a one-row request then evaluates 16 devices per instruction instead of wasting 15 lanes, and a
 * fold of the lanes at the end of each evaluation sums the devices' contributions per row. The
 * node count and the level are compile-time constants in every instantiation, so the row loops
 * unroll and the accumulators stay in registers.
 */
#include "_rk4.h"

/* lane i <- lane (i + s) mod 16 */
#define ROT(v, s)                                                                                                 \
    __builtin_shufflevector(v, v, (0 + s) & 15, (1 + s) & 15, (2 + s) & 15, (3 + s) & 15, (4 + s) & 15,           \
                            (5 + s) & 15, (6 + s) & 15, (7 + s) & 15, (8 + s) & 15, (9 + s) & 15, (10 + s) & 15,  \
                            (11 + s) & 15, (12 + s) & 15, (13 + s) & 15, (14 + s) & 15, (15 + s) & 15)

/* Sum of a packed vector over its device groups: every lane i then holds the total of the lanes
 * congruent to i modulo the rows per vector (16 >> level), i.e. its row's sum, tiled again. */
INLINE vf fold(vf a, const int level) {
    if (level >= 1) a += ROT(a, 8);
    if (level >= 2) a += ROT(a, 4);
    if (level >= 3) a += ROT(a, 2);
    if (level >= 4) a += ROT(a, 1);
    return a;
}

/* weight i of the current device vector: broadcast (level 0) or one per lane */
#define WEIGHT(i) (LEVEL == 0 ? splat(w[i]) : vload(w + (i) * LANES))

/* out = d state/dt; state and out hold NK voltage vectors then l */
INLINE void evaluate(const int NK, const int LEVEL, const Layer *L, const vf *x, vf *out, int with_div) {
    const int P = 2 * NK + 2;
    const int stride = LEVEL == 0 ? P : P * LANES;
    vf acc[NK + 1];
    for (int j = 0; j <= NK; j++) acc[j] = splat(0.f);
    const float *w = L->packed[LEVEL];
    const int n = L->vectors[LEVEL];
    const int kernel = L->kernel, feat = L->feature;
    const float leaky = L->leaky;
    for (int e = 0; e < n; e++, w += stride) {
        vf z = WEIGHT(0);
        for (int j = 0; j < NK; j++) z += WEIGHT(1 + j) * x[j];
        vf y = activate(kernel, leaky, z);
        for (int j = 0; j < NK; j++) acc[j] += WEIGHT(1 + NK + j) * y;
        if (with_div) acc[NK] += WEIGHT(2 * NK + 1) * slope_feature(feat, y);
    }
    for (int j = 0; j < NK; j++) out[j] = fold(acc[j], LEVEL) + L->bias[j];
    out[NK] = with_div ? fold(acc[NK], LEVEL) + L->bias[NK] : splat(0.f);
}

/* The four stages in one loop (one inlined evaluation per instantiation keeps the build short);
 * the same arithmetic, in the same order, as models.engine_layers.rk4_layer. */
INLINE void rk4(const int NK, const int LEVEL, const Layer *L, vf *s, int n_steps, float h, int with_div) {
    vf t[NK + 1], k[NK + 1], acc[NK + 1];
    for (int step = 0; step < n_steps; step++) {
        for (int stage = 0; stage < 4; stage++) {
            evaluate(NK, LEVEL, L, stage == 0 ? s : t, k, with_div);
            const float to_next = stage == 2 ? h : 0.5f * h;
            for (int j = 0; j <= NK; j++) {
                if (stage == 3) {
                    s[j] += (h / 6.f) * (acc[j] + k[j]);
                } else {
                    acc[j] = stage == 0 ? k[j] : acc[j] + 2.f * k[j];
                    t[j] = s[j] + to_next * k[j];
                }
            }
        }
    }
}

#define LEVELS(NK)                                                                                                \
    switch (level) {                                                                                              \
    case 0: rk4(NK, 0, L, state, n_steps, h, with_div); break;                                                   \
    case 1: rk4(NK, 1, L, state, n_steps, h, with_div); break;                                                   \
    case 2: rk4(NK, 2, L, state, n_steps, h, with_div); break;                                                   \
    case 3: rk4(NK, 3, L, state, n_steps, h, with_div); break;                                                   \
    default: rk4(NK, 4, L, state, n_steps, h, with_div); break;                                                  \
    }

CLONES void dense_steps(const Layer *L, int level, vf *state, int n_steps, float h, int with_div) {
    switch (L->nk) {
    case 1: LEVELS(1) break;
    case 2: LEVELS(2) break;
    case 4: LEVELS(4) break;
    default: LEVELS(8) break;
    }
}
