/* The compiled engine's vector arithmetic, shared by its dense and gather kernels (models/_rk4_*.c).
 *
 * One vector holds LANES float32 lanes (GCC vector extensions: AVX-512 registers in the x86-64-v4
 * clone, pairs of AVX2 registers in the v3 clone, SSE quadruples in the baseline clone, NEON on
 * aarch64). The activations are the device table's FusedForm kernels and features
 * (models.devices), listed in KERNELS and FEATURES of models/_rk4_module.c in this order.
 */
#ifndef KNET_RK4_MATH_H
#define KNET_RK4_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 16

typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));

enum { K_SIGMOID, K_TANH, K_RELU, K_LEAKY_RELU, K_IDENTITY, N_KERNELS };
enum { F_NONE, F_LOGISTIC_SLOPE, F_SQUARE, F_STEP, N_FEATURES };

#define INLINE static inline __attribute__((always_inline))

/* One build runs well on every x86-64: the loader picks the AVX-512, AVX2 or baseline clone of
 * each entry point marked CLONES. Elsewhere (aarch64, clang) one portable build. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

INLINE vf splat(float a) { return (vf){0} + a; }
INLINE vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
INLINE void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* lanes of a where mask is all ones, else of b (C has no vector ?:) */
INLINE vf lanes(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
/* clamps that let NaN through (a comparison with NaN is false), as torch's activations do: a NaN
 * pre-activation must stay NaN so the solve ends NONFINITE instead of saturating to a number */
INLINE vf at_least(vf x, float lo) { return lanes(x < lo, splat(lo), x); }
INLINE vf at_most(vf x, float hi) { return lanes(x > hi, splat(hi), x); }

/* exp(x): x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact n ln2), exp(r) by its
 * degree-7 Taylor polynomial (truncation < 5e-9 relative), 2^n written into the exponent bits.
 * Clamped to [-87, 87] so 2^n stays a normal float; the activations saturate long before. n is
 * rounded by adding 1.5 * 2^23 (the sum's low mantissa bits are then round-to-nearest of x / ln2,
 * exact for |x / ln2| < 2^22): three operations fewer than a conversion to integers and back. NaN
 * stays NaN (the polynomial carries it, whatever its garbage exponent). */
#define ROUNDER 12582912.f /* 1.5 * 2^23 */
INLINE vf vexp(vf x) {
    x = at_most(at_least(x, -87.f), 87.f);
    vf t = x * 1.44269504088896341f + ROUNDER;
    vf nf = t - ROUNDER;
    vi n;
    memcpy(&n, &t, sizeof n);
    n -= 0x4B400000; /* the bits of ROUNDER: n is now the rounded integer */
    vf r = x - nf * 0.693145751953125f - nf * 1.428606765330187e-06f;
    vf p = splat(1.f / 5040.f);
    p = p * r + 1.f / 720.f;
    p = p * r + 1.f / 120.f;
    p = p * r + 1.f / 24.f;
    p = p * r + 1.f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    vi bits = (n + 127) << 23;
    vf scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* y = kernel(z), the FusedForm's kernel (gain already folded into z) */
INLINE vf activate(int kernel, float leaky, vf z) {
    switch (kernel) {
    case K_SIGMOID: return 1.f / (1.f + vexp(-z));
    case K_TANH: return 2.f / (1.f + vexp(-2.f * z)) - 1.f;
    case K_RELU: return at_least(z, 0.f);
    case K_LEAKY_RELU: return lanes(z > 0, z, leaky * z);
    default: return z;
    }
}

/* g = feature(y), the FusedForm's slope feature */
INLINE vf slope_feature(int feature, vf y) {
    switch (feature) {
    case F_LOGISTIC_SLOPE: return y - y * y;
    case F_SQUARE: return y * y;
    case F_STEP: return lanes(y > 0, splat(1.f), splat(0.f));
    default: return splat(0.f);
    }
}

/* A layer as the kernels read it, built once per model and direction by models/_rk4_module.c
 * from the folded weights of models.engine_layers (dense_weights, GatherLayer). */
#define DENSE_MAX_NODES 8 /* dense kernels for 1, 2, 4 and 8 nodes (others padded to the next) */
#define PACK_LEVELS 5     /* lane packing: 1 << level devices per vector, 16 >> level rows */

typedef struct {
    int gather;          /* 0: dense kernels, 1: gather kernels */
    int nodes;           /* N, voltages per row */
    int edges;           /* E, devices */
    int kernel, feature; /* the FusedForm's names, as K_* and F_* */
    float leaky;
    double duration;     /* model time */
    /* dense: NK (1, 2, 4 or 8) >= N nodes; per packing level the weights of each vector of
     * devices, P = 2 NK + 2 per device: [c, a_1..a_NK, k_1..k_NK, w] (pre-activation bias and
     * voltage gains, KCL coefficients, divergence weight); level 0: P floats per device,
     * level p > 0: P vectors per group of 1 << p devices, each weight repeated 16 >> p times */
    int nk;
    float *packed[PACK_LEVELS];
    int vectors[PACK_LEVELS];
    float bias[DENSE_MAX_NODES + 1]; /* dv/dt offsets per voltage row; [nk]: the divergence constant */
    /* gather: per device src, dst (0 = ground), gains a, b and offset c (ground masked), w; per
     * node (1..N) dv_k = node_scale[k] * sum(+y in, -y out) + node_const[k]; per node the CSR of
     * its devices (coefficient +-node_scale) for the row-at-a-time kernel */
    int32_t *src, *dst;
    float *a, *b, *c, *w;
    float *node_scale, *node_const;
    float div_const;
    int32_t *csr_start, *csr_edge;
    float *csr_coef;
} Layer;

/* One RK4 step count on one block (models/_rk4_dense.c): ``state`` holds nk voltage vectors then
 * l, each lane a row (level 0) or rows tiled (level p: lane i holds row i mod (16 >> p)). */
void dense_steps(const Layer *L, int level, vf *state, int n_steps, float h, int with_div);

/* The gather form (models/_rk4_gather.c). Block kernel: ``x`` holds N + 1 vectors (index 0 =
 * ground, kept 0) and l after them; ``scratch`` 3 (N + 1) vectors. Row kernel: ``x`` holds
 * (N + 1) * rows floats, node-major (ground first, 0), then l per row; ``scratch`` as
 * gather_row_scratch(L, rows) says. */
void gather_block_steps(const Layer *L, vf *x, vf *scratch, int n_steps, float h, int with_div);
void gather_row_steps(const Layer *L, int rows, float *x, float *scratch, int n_steps, float h, int with_div);
size_t gather_row_scratch(const Layer *L, int rows);

#endif
