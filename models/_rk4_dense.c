/* The engine's compiled CPU path: classical RK4 over a dense-form layer, fused per row block.
 *
 * The torch engine evaluates one layer as ~6 whole-batch kernels per RK4 stage, each a trip
 * through memory and torch's dispatcher. Here every block of BLOCK_ROWS rows runs whole RK4
 * steps with its state, stages and device values in vector registers: per device and block,
 * one pre-activation, one activation, one slope feature and the KCL/divergence updates.
 *
 * Weights come folded exactly as the torch and NumPy dense forms fold them
 * (models.engine_layers.dense_weights, state layout of models.engine_state):
 *   z_e   = sum_j wz[e][j] x_j            (x_0 = 1 carries the bias; the last row, l, has weight 0)
 *   y_e   = kernel(z_e),  g_e = feature(y_e)
 *   dx_j  = bias_j + sum_e (wy[e][j] y_e + wg[e][j] g_e)
 * with wy, wg the columns of Wo for y and g, stored device-major. The kernel and feature are
 * the device table's FusedForm names (models.devices), listed in KERNELS and FEATURES below,
 * which Python reads from this module: one list, no second numbering.
 *
 * exp is evaluated here (a vectorisable range-reduced polynomial, relative error < 1e-7 on
 * [-87, 87], arguments clamped there), so answers differ from torch's sigmoid by float32
 * rounding only (tests/test_engine_native.py holds them to 1e-5 after whole solves).
 *
 * Python API: rk4_dense(rows, kernel_rows, edges, kernel, feature, leaky_slope, wz, wy, wg, bias,
 * S, ld, batch, n_steps, h, with_div): advances S (rows x batch, row stride ld, float32) in place
 * by n_steps RK4 steps of size h; the weights have kernel_rows columns (see KERNEL_ROWS). Pointers are integer addresses of contiguous float32 buffers
 * (the caller, models.engine_native, checks dtype, layout and device). The GIL is released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BLOCK_ROWS 16
#define MAX_ROWS 10 /* the largest of KERNEL_ROWS: circuits of up to 8 nodes */

typedef float vf __attribute__((vector_size(BLOCK_ROWS * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(BLOCK_ROWS * sizeof(int32_t))));

enum { K_SIGMOID, K_TANH, K_RELU, K_LEAKY_RELU, K_IDENTITY };
static const char *KERNELS[] = {"sigmoid", "tanh", "relu", "leaky_relu", "identity"};
enum { F_NONE, F_LOGISTIC_SLOPE, F_SQUARE, F_STEP };
static const char *FEATURES[] = {"none", "logistic_slope", "square", "step"};

#define INLINE static inline __attribute__((always_inline))

INLINE vf splat(float a) { return (vf){0} + a; }
/* lanes of a where mask is all ones, else of b (C has no vector ?:) */
INLINE vf lanes(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
/* clamps that let NaN through (a comparison with NaN is false), as torch's activations do: a NaN
 * pre-activation must stay NaN so the solve ends NONFINITE instead of saturating to a number */
INLINE vf at_least(vf x, float lo) { return lanes(x < lo, splat(lo), x); }
INLINE vf at_most(vf x, float hi) { return lanes(x > hi, splat(hi), x); }

/* exp(x): x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact n ln2), exp(r) by its
 * degree-7 Taylor polynomial (truncation < 5e-9 relative), 2^n written into the exponent bits.
 * Clamped to [-87, 87] so 2^n stays a normal float; the activations saturate long before. NaN
 * stays NaN (the polynomial carries it, whatever its garbage exponent). */
INLINE vf vexp(vf x) {
    x = at_most(at_least(x, -87.f), 87.f);
    vf t = x * 1.44269504088896341f + lanes(x > 0, splat(0.5f), splat(-0.5f));
    vi n = __builtin_convertvector(t, vi);
    vf nf = __builtin_convertvector(n, vf);
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

typedef struct {
    int kernel, feature, with_div;
    float leaky;
    const float *wz, *wy, *wg, *bias;
} Layer;

/* out = dS/dt for the block x (R rows of BLOCK_ROWS lanes). R is a compile-time constant in
 * every instantiation (see CASE, KERNEL_ROWS), so the row loops unroll and the accumulators stay
 * in registers. */
INLINE void evaluate(const int R, const int E, const Layer *L, const vf *x, vf *out) {
    vf acc[R];
    for (int j = 0; j < R; j++) acc[j] = splat(L->bias[j]);
    const float *wz = L->wz, *wy = L->wy, *wg = L->wg;
    for (int e = 0; e < E; e++, wz += R, wy += R, wg += R) {
        vf y = splat(wz[0]);
        for (int j = 1; j < R - 1; j++) y += wz[j] * x[j];
        switch (L->kernel) {
        case K_SIGMOID: y = 1.f / (1.f + vexp(-y)); break;
        case K_TANH: y = 2.f / (1.f + vexp(-2.f * y)) - 1.f; break;
        case K_RELU: y = at_least(y, 0.f); break;
        case K_LEAKY_RELU: y = lanes(y > 0, y, L->leaky * y); break;
        default: break;
        }
        vf g = splat(0.f);
        if (L->with_div) {
            switch (L->feature) {
            case F_LOGISTIC_SLOPE: g = y - y * y; break;
            case F_SQUARE: g = y * y; break;
            case F_STEP: g = lanes(y > 0, splat(1.f), splat(0.f)); break;
            default: break;
            }
            acc[R - 1] += wg[R - 1] * g;
        }
        for (int j = 1; j < R - 1; j++) acc[j] += wy[j] * y + wg[j] * g;
    }
    if (!L->with_div) acc[R - 1] = splat(0.f);
    for (int j = 0; j < R; j++) out[j] = acc[j];
}

INLINE void rk4_block(const int R, const int E, const Layer *L, vf *s, int n_steps, float h) {
    vf t[R], k[R], acc[R];
    for (int step = 0; step < n_steps; step++) {
        evaluate(R, E, L, s, k);
        for (int j = 0; j < R; j++) { acc[j] = k[j]; t[j] = s[j] + (0.5f * h) * k[j]; }
        evaluate(R, E, L, t, k);
        for (int j = 0; j < R; j++) { acc[j] += 2.f * k[j]; t[j] = s[j] + (0.5f * h) * k[j]; }
        evaluate(R, E, L, t, k);
        for (int j = 0; j < R; j++) { acc[j] += 2.f * k[j]; t[j] = s[j] + h * k[j]; }
        evaluate(R, E, L, t, k);
        for (int j = 0; j < R; j++) s[j] += (h / 6.f) * (acc[j] + k[j]);
    }
}

/* The row counts compiled: 3 and 4 (1- and 2-node circuits, the 2-D zoo), 6 and 10 (up to 4 and
 * 8 nodes). A layer of another size runs in the next one up with zero rows inserted before the l
 * row (models.engine_native pads its weights the same way), which costs only multiply-adds by zero.
 * Larger circuits stay on the torch path: the fully unrolled kernels grow with the row count, and
 * 18 rows (16 nodes, the dense form's limit) alone tripled the extension's compile time. */
static const int KERNEL_ROWS[] = {3, 4, 6, 10};
#define N_KERNEL_ROWS ((int)(sizeof KERNEL_ROWS / sizeof KERNEL_ROWS[0]))
#define CASE(RR) case RR: rk4_block(RR, E, L, s, n_steps, h); break;

/* One build runs well on every x86-64: the loader picks the AVX-512, AVX2 or baseline clone.
 * R: the state's rows; K: the kernel's (R plus the inserted zero rows, one of KERNEL_ROWS). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
static void rk4_rows(int R, int K, int E, const Layer *L, float *S, Py_ssize_t ld, Py_ssize_t batch, int n_steps,
                     float h) {
    vf s[MAX_ROWS];
    for (Py_ssize_t b0 = 0; b0 < batch; b0 += BLOCK_ROWS) {
        size_t n = (size_t)(batch - b0 < BLOCK_ROWS ? batch - b0 : BLOCK_ROWS);
        /* a tail block's unused lanes hold zeros and are not written back; state row j < R - 1
         * is kernel row j, the l row (R - 1) is kernel row K - 1, the rows between stay zero */
        for (int j = 0; j < K; j++) s[j] = splat(0.f);
        for (int j = 0; j < R; j++) memcpy(&s[j < R - 1 ? j : K - 1], S + j * ld + b0, n * sizeof(float));
        switch (K) { CASE(3) CASE(4) CASE(6) CASE(10) }
        for (int j = 0; j < R; j++) memcpy(S + j * ld + b0, &s[j < R - 1 ? j : K - 1], n * sizeof(float));
    }
}

static int is_kernel_rows(int K) {
    for (int i = 0; i < N_KERNEL_ROWS; i++)
        if (KERNEL_ROWS[i] == K) return 1;
    return 0;
}

static PyObject *py_rk4_dense(PyObject *self, PyObject *args) {
    int R, K, E, kernel, feature, n_steps, with_div;
    float leaky, h;
    unsigned long long wz, wy, wg, bias, S;
    Py_ssize_t ld, batch;
    if (!PyArg_ParseTuple(args, "iiiiifKKKKKnnifp", &R, &K, &E, &kernel, &feature, &leaky, &wz, &wy, &wg, &bias,
                          &S, &ld, &batch, &n_steps, &h, &with_div))
        return NULL;
    if (R < 3 || R > K || !is_kernel_rows(K) || E < 0 || batch < 0 || ld < batch || n_steps < 0) {
        PyErr_Format(PyExc_ValueError,
                     "rk4_dense: rows %d, kernel rows %d (one of KERNEL_ROWS, >= rows), edges %d, batch %zd, "
                     "ld %zd, steps %d", R, K, E, batch, ld, n_steps);
        return NULL;
    }
    if (kernel < 0 || kernel > K_IDENTITY || feature < 0 || feature > F_STEP) {
        PyErr_Format(PyExc_ValueError, "rk4_dense: unknown kernel %d or feature %d", kernel, feature);
        return NULL;
    }
    Layer L = {kernel, feature, with_div, leaky, (const float *)(uintptr_t)wz, (const float *)(uintptr_t)wy,
               (const float *)(uintptr_t)wg, (const float *)(uintptr_t)bias};
    Py_BEGIN_ALLOW_THREADS
    rk4_rows(R, K, E, &L, (float *)(uintptr_t)S, ld, batch, n_steps, h);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"rk4_dense", py_rk4_dense, METH_VARARGS, "RK4 steps over a dense-form layer, in place (see module doc)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rk4_dense",
                                    "Compiled RK4 over dense-form layers (models.engine_native).", -1, methods};

static PyObject *names(const char **list, int n) {
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t != NULL && i < n; i++) PyTuple_SET_ITEM(t, i, PyUnicode_FromString(list[i]));
    return t;
}

static PyObject *ints(const int *list, int n) {
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t != NULL && i < n; i++) PyTuple_SET_ITEM(t, i, PyLong_FromLong(list[i]));
    return t;
}

PyMODINIT_FUNC PyInit__rk4_dense(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObject(m, "KERNELS", names(KERNELS, K_IDENTITY + 1)) < 0 ||
        PyModule_AddObject(m, "FEATURES", names(FEATURES, F_STEP + 1)) < 0 ||
        PyModule_AddIntConstant(m, "BLOCK_ROWS", BLOCK_ROWS) < 0 ||
        PyModule_AddObject(m, "KERNEL_ROWS", ints(KERNEL_ROWS, N_KERNEL_ROWS)) < 0 ||
        PyModule_AddIntConstant(m, "MAX_ROWS", MAX_ROWS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
