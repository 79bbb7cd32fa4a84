/* Classical RK4 over a gather-form layer: any node count (the 64-node digits model, 784-node
 * imported circuits), each device touched once per evaluation.
 *
 * Per device e (src s, dst d; 0 = ground):  z = a_e v_s + b_e v_d + c_e,  y = kernel(z),
 *   acc_d += y, acc_s -= y, dl/dt += w_e feature(y);  then per node dv_k/dt = scale_k acc_k + const_k
 * (models.engine_layers.GatherLayer folds the FusedForm's constants and 1/C into a, b, c, w, scale
 * and const). Two kernels:
 *   - blocks of 16 rows, one row per lane: the state of a block (N + 1 vectors) stays in L1/L2 and
 *     every device is a few vector loads, the activation and two vector read-modify-writes;
 *   - a few rows (1, 2 or 4), where most of a 16-row block's lanes would idle: the pre-activations
 *     of all (device, row) pairs are gathered into one array, the activation runs 16 pairs per
 *     instruction over it, and each node sums its devices' currents through its own device list
 *     (CSR), with no scatter.
 */
#include "_rk4.h"

/* ------------------------------------------------------------------ 16-row blocks */

INLINE void block_evaluate(const Layer *L, const vf *x, vf *d, int with_div) {
    const int N = L->nodes, E = L->edges, kernel = L->kernel, feat = L->feature;
    const float leaky = L->leaky;
    const int32_t *src = L->src, *dst = L->dst;
    const float *a = L->a, *b = L->b, *c = L->c, *w = L->w;
    for (int k = 0; k <= N; k++) d[k] = splat(0.f);
    vf dl = splat(0.f);
    for (int e = 0; e < E; e++) {
        const int s = src[e], t = dst[e];
        vf y = activate(kernel, leaky, a[e] * x[s] + b[e] * x[t] + c[e]);
        d[t] += y;
        d[s] -= y;
        if (with_div) dl += w[e] * slope_feature(feat, y);
    }
    d[0] = splat(0.f); /* ground has no equation */
    for (int k = 1; k <= N; k++) d[k] = L->node_scale[k] * d[k] + L->node_const[k];
    d[N + 1] = with_div ? dl + L->div_const : splat(0.f);
}

/* x: N + 2 vectors (ground, v_1..v_N, l); scratch: 3 (N + 2) vectors */
CLONES void gather_block_steps(const Layer *L, vf *x, vf *scratch, int n_steps, float h, int with_div) {
    const int R = L->nodes + 2;
    vf *t = scratch, *k = scratch + R, *acc = scratch + 2 * R;
    for (int step = 0; step < n_steps; step++) {
        for (int stage = 0; stage < 4; stage++) {
            block_evaluate(L, stage == 0 ? x : t, k, with_div);
            const float to_next = stage == 2 ? h : 0.5f * h;
            for (int j = 0; j < R; j++) {
                if (stage == 3) {
                    x[j] += (h / 6.f) * (acc[j] + k[j]);
                } else {
                    acc[j] = stage == 0 ? k[j] : acc[j] + 2.f * k[j];
                    t[j] = x[j] + to_next * k[j];
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ a few rows */

INLINE size_t pairs_padded(const Layer *L, int rows) {
    return ((size_t)L->edges * rows + LANES - 1) / LANES * LANES;
}

size_t gather_row_scratch(const Layer *L, int rows) {
    /* t, k, acc: (N + 2) rows each; y and g: one float per (device, row) pair, padded */
    return 3 * (size_t)(L->nodes + 2) * rows + 2 * pairs_padded(L, rows);
}

/* x, d: (N + 2) * rows floats, node-major (ground, v_1..v_N, l), rows contiguous */
INLINE void row_evaluate(const Layer *L, const int rows, const float *x, float *d, float *y, float *g,
                                int with_div) {
    const int N = L->nodes, E = L->edges, kernel = L->kernel, feat = L->feature;
    const float leaky = L->leaky;
    const size_t n = pairs_padded(L, rows);
    for (int e = 0; e < E; e++) {
        const float *xs = x + (size_t)L->src[e] * rows, *xt = x + (size_t)L->dst[e] * rows;
        const float ae = L->a[e], be = L->b[e], ce = L->c[e];
        for (int r = 0; r < rows; r++) y[(size_t)e * rows + r] = ae * xs[r] + be * xt[r] + ce;
    }
    for (size_t i = (size_t)E * rows; i < n; i++) y[i] = 0.f;
    for (size_t i = 0; i < n; i += LANES) {
        vf v = activate(kernel, leaky, vload(y + i));
        vstore(y + i, v);
        if (with_div) vstore(g + i, slope_feature(feat, v));
    }
    /* each node's sum in CHAINS interleaved partial sums per row: a single running sum would wait
     * on the previous addition's latency for every one of the node's devices */
    enum { CHAINS = 4 };
    for (int r = 0; r < rows; r++) d[r] = 0.f;
    for (int k = 1; k <= N; k++) {
        float sum[CHAINS][rows];
        for (int c = 0; c < CHAINS; c++)
            for (int r = 0; r < rows; r++) sum[c][r] = 0.f;
        const int start = L->csr_start[k], stop = L->csr_start[k + 1];
        int i = start;
        for (; i + CHAINS <= stop; i += CHAINS)
            for (int c = 0; c < CHAINS; c++) {
                const float *ye = y + (size_t)L->csr_edge[i + c] * rows;
                const float cf = L->csr_coef[i + c];
                for (int r = 0; r < rows; r++) sum[c][r] += cf * ye[r];
            }
        for (; i < stop; i++) {
            const float *ye = y + (size_t)L->csr_edge[i] * rows;
            for (int r = 0; r < rows; r++) sum[0][r] += L->csr_coef[i] * ye[r];
        }
        for (int r = 0; r < rows; r++)
            d[(size_t)k * rows + r] = ((sum[0][r] + sum[1][r]) + (sum[2][r] + sum[3][r])) + L->node_const[k];
    }
    float *dl = d + (size_t)(N + 1) * rows;
    for (int r = 0; r < rows; r++) dl[r] = 0.f;
    if (with_div && rows == 1) { /* one lane per device: w and g line up */
        vf acc = splat(0.f);
        int e = 0;
        for (; e + LANES <= E; e += LANES) acc += vload(L->w + e) * vload(g + e);
        for (int l = 0; l < LANES; l++) dl[0] += acc[l];
        for (; e < E; e++) dl[0] += L->w[e] * g[e];
        dl[0] += L->div_const;
    } else if (with_div) {
        for (int e = 0; e < E; e++)
            for (int r = 0; r < rows; r++) dl[r] += L->w[e] * g[(size_t)e * rows + r];
        for (int r = 0; r < rows; r++) dl[r] += L->div_const;
    }
}

INLINE void row_steps(const Layer *L, const int rows, float *x, float *scratch, int n_steps, float h,
                      int with_div) {
    const size_t R = (size_t)(L->nodes + 2) * rows;
    float *t = scratch, *k = scratch + R, *acc = scratch + 2 * R, *y = scratch + 3 * R;
    float *g = y + pairs_padded(L, rows);
    for (int step = 0; step < n_steps; step++) {
        for (int stage = 0; stage < 4; stage++) {
            row_evaluate(L, rows, stage == 0 ? x : t, k, y, g, with_div);
            const float to_next = stage == 2 ? h : 0.5f * h;
            for (size_t j = 0; j < R; j++) {
                if (stage == 3) {
                    x[j] += (h / 6.f) * (acc[j] + k[j]);
                } else {
                    acc[j] = stage == 0 ? k[j] : acc[j] + 2.f * k[j];
                    t[j] = x[j] + to_next * k[j];
                }
            }
        }
    }
}

/* rows is a compile-time constant in each instantiation: the per-row loops unroll and each node's
 * sums stay in registers */
CLONES void gather_row_steps(const Layer *L, int rows, float *x, float *scratch, int n_steps, float h,
                             int with_div) {
    switch (rows) {
    case 1: row_steps(L, 1, x, scratch, n_steps, h, with_div); break;
    case 2: row_steps(L, 2, x, scratch, n_steps, h, with_div); break;
    default: row_steps(L, 4, x, scratch, n_steps, h, with_div); break;
    }
}

