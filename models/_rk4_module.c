/* models._rk4: the engine's compiled CPU path (models.engine_native), as a Python module.
 *
 * layer = dense_layer(...) / gather_layer(...): a layer's folded weights (models.engine_layers)
 *     copied into the layouts the kernels read (models/_rk4_dense.c, models/_rk4_gather.c), held
 *     by a capsule.
 * solve(layers, steps, x, batch, x_out, ell_in, ell_out, with_div, max_steps, wall_left_s):
 *     one whole solve: the layers in the order given, each with its RK4 steps, from the rows x
 *     (batch x N, float32, row-major) to x_out and ell_out (l starts at ell_in, or 0 when it is 0);
 *     returns (status, steps charged, steps run, position). It keeps the engine's one budget rule
 *     (models.engine_state.run_layers with models.solvers.Budget): every step is charged before
 *     it runs (one more than max_steps: MAX_STEPS; past the deadline: TIMEOUT, the step counted),
 *     steps are granted in chunks of about a millisecond of work whose granted steps run before a
 *     refusal is returned, and after every layer the rows must be finite (NONFINITE) and the clock
 *     within the deadline (TIMEOUT). status is the Status value; position the index into
 *     ``layers`` where it stopped. The state reached is written out in every case.
 * activate(kernel, feature, leaky, z, y, g, n[, rounds]): the kernels' activation over an array,
 *     rounds times (tests measure its error in ulp, the roofline its throughput); fma_loop(n): n rounds of a
 *     register-resident FMA stream, the roofline's peak.
 * Pointers are integer addresses of contiguous float32 (int32 for indices) host buffers; the
 * caller (models.engine_native) checks types, shapes and devices. The GIL is released while solving.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <time.h>

#include "_rk4.h"

static const char *KERNELS[] = {"sigmoid", "tanh", "relu", "leaky_relu", "identity"};
static const char *FEATURES[] = {"none", "logistic_slope", "square", "step"};

enum { SUCCESS = 0, MAX_STEPS = 1, TIMEOUT = 2, NONFINITE = 3 };
#define CHUNK_WORK 16384 /* device-vector steps per granted chunk: about a millisecond */
/* gather tails of up to 4 rows take the row kernel (faster than a 16-row block there for digits, 786
 * devices, and a 784-node import, 50,240 devices: docs/engine.md), unless its per-pair arrays of
 * activations and slopes (8 bytes a (device, row) pair) would outgrow the L2 cache several times */
#define ROW_KERNEL_MAX 4
#define ROW_KERNEL_PAIRS 262144
#define CAPSULE "knet.rk4.layer"

/* ------------------------------------------------------------------ layers */

static void free_layer(Layer *L) {
    for (int p = 0; p < PACK_LEVELS; p++) free(L->packed[p]);
    free(L->src); free(L->dst); free(L->a); free(L->b); free(L->c); free(L->w);
    free(L->node_scale); free(L->node_const); free(L->csr_start); free(L->csr_edge); free(L->csr_coef);
    free(L);
}

static void capsule_free(PyObject *capsule) {
    Layer *L = PyCapsule_GetPointer(capsule, CAPSULE);
    if (L != NULL) free_layer(L);
}

static void *alloc(size_t n) { /* n floats (or int32s), 64-byte aligned, zeroed; NULL when out of memory */
    size_t bytes = (n * 4 + 63) / 64 * 64;
    bytes = bytes ? bytes : 64;
    void *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

/* the layer in a capsule, or freed with a MemoryError when an allocation failed */
static PyObject *wrap(Layer *L, int ok) {
    PyObject *capsule = ok ? PyCapsule_New(L, CAPSULE, capsule_free) : NULL;
    if (capsule == NULL) {
        free_layer(L);
        return ok ? NULL : PyErr_NoMemory();
    }
    return capsule;
}

static int check_common(int N, int E, int kernel, int feature) {
    if (N < 1 || E < 0 || kernel < 0 || kernel >= N_KERNELS || feature < 0 || feature >= N_FEATURES) {
        PyErr_Format(PyExc_ValueError, "_rk4: nodes %d, edges %d, kernel %d, feature %d", N, E, kernel, feature);
        return 0;
    }
    return 1;
}

/* dense_layer(nodes, edges, kernel, feature, leaky, duration, Wz, Wo): Wz (E, N+2) and
 * Wo (N+2, 2E+1) as models.engine_layers.dense_weights lays them out */
static PyObject *py_dense_layer(PyObject *self, PyObject *args) {
    int N, E, kernel, feature;
    float leaky;
    double duration;
    unsigned long long wz_p, wo_p;
    if (!PyArg_ParseTuple(args, "iiiifdKK", &N, &E, &kernel, &feature, &leaky, &duration, &wz_p, &wo_p)) return NULL;
    if (!check_common(N, E, kernel, feature)) return NULL;
    if (N > DENSE_MAX_NODES) return PyErr_Format(PyExc_ValueError, "_rk4: dense layers have at most %d nodes",
                                                 DENSE_MAX_NODES);
    const float *Wz = (const float *)(uintptr_t)wz_p, *Wo = (const float *)(uintptr_t)wo_p;
    Layer *L = calloc(1, sizeof *L);
    if (L == NULL) return PyErr_NoMemory();
    *L = (Layer){.gather = 0, .nodes = N, .edges = E, .kernel = kernel, .feature = feature, .leaky = leaky,
                 .duration = duration};
    int nk = 1;
    while (nk < N) nk *= 2;
    L->nk = nk;
    const int P = 2 * nk + 2, cols = 2 * E + 1;
    for (int j = 0; j < N; j++) L->bias[j] = Wo[(1 + j) * cols + 2 * E];
    L->bias[nk] = Wo[(N + 1) * cols + 2 * E];
    int ok = 1;
    for (int p = 0; p < PACK_LEVELS && ok; p++) {
        const int G = 1 << p, r = LANES >> p, V = (E + G - 1) / G, width = p == 0 ? 1 : LANES;
        float *w = L->packed[p] = alloc((size_t)(V > 0 ? V : 1) * P * width);
        L->vectors[p] = V;
        ok = w != NULL;
        for (int v = 0; ok && v < V; v++)
            for (int i = 0; i < P; i++)
                for (int l = 0; l < width; l++) {
                    const int e = v * G + l / r;
                    float x = 0.f;
                    if (e < E) {
                        if (i == 0) x = Wz[e * (N + 2)];
                        else if (i <= nk) x = i - 1 < N ? Wz[e * (N + 2) + i] : 0.f;
                        else if (i <= 2 * nk) x = i - 1 - nk < N ? Wo[(i - nk) * cols + e] : 0.f;
                        else x = Wo[(N + 1) * cols + E + e];
                    }
                    w[((size_t)v * P + i) * width + l] = x;
                }
    }
    return wrap(L, ok);
}

/* gather_layer(nodes, edges, kernel, feature, leaky, duration, src, dst, a, b, c, w, node_scale,
 * node_const, div_const): per-edge arrays (E,), src/dst int32; node_scale, node_const (N+1,) */
static PyObject *py_gather_layer(PyObject *self, PyObject *args) {
    int N, E, kernel, feature;
    float leaky, div_const;
    double duration;
    unsigned long long p_src, p_dst, p_a, p_b, p_c, p_w, p_scale, p_const;
    if (!PyArg_ParseTuple(args, "iiiifdKKKKKKKKf", &N, &E, &kernel, &feature, &leaky, &duration, &p_src, &p_dst,
                          &p_a, &p_b, &p_c, &p_w, &p_scale, &p_const, &div_const))
        return NULL;
    if (!check_common(N, E, kernel, feature)) return NULL;
    const int32_t *src = (const int32_t *)(uintptr_t)p_src, *dst = (const int32_t *)(uintptr_t)p_dst;
    for (int e = 0; e < E; e++)
        if (src[e] < 0 || src[e] > N || dst[e] < 0 || dst[e] > N)
            return PyErr_Format(PyExc_ValueError, "_rk4: edge %d joins nodes %d and %d of %d", e, src[e], dst[e], N);
    Layer *L = calloc(1, sizeof *L);
    if (L == NULL) return PyErr_NoMemory();
    *L = (Layer){.gather = 1, .nodes = N, .edges = E, .kernel = kernel, .feature = feature, .leaky = leaky,
                 .duration = duration, .div_const = div_const};
    L->src = alloc(E); L->dst = alloc(E); L->a = alloc(E); L->b = alloc(E); L->c = alloc(E); L->w = alloc(E);
    L->node_scale = alloc(N + 1); L->node_const = alloc(N + 1);
    L->csr_start = alloc(N + 2); L->csr_edge = alloc(2 * (size_t)E); L->csr_coef = alloc(2 * (size_t)E);
    int ok = L->src && L->dst && L->a && L->b && L->c && L->w && L->node_scale && L->node_const && L->csr_start &&
             L->csr_edge && L->csr_coef;
    if (ok) {
        memcpy(L->src, src, E * 4); memcpy(L->dst, dst, E * 4);
        memcpy(L->a, (void *)(uintptr_t)p_a, E * 4); memcpy(L->b, (void *)(uintptr_t)p_b, E * 4);
        memcpy(L->c, (void *)(uintptr_t)p_c, E * 4); memcpy(L->w, (void *)(uintptr_t)p_w, E * 4);
        memcpy(L->node_scale, (void *)(uintptr_t)p_scale, (N + 1) * 4);
        memcpy(L->node_const, (void *)(uintptr_t)p_const, (N + 1) * 4);
        /* CSR by node, each node's devices in edge order: +scale for devices into it, -scale out */
        for (int e = 0; e < E; e++) {
            if (dst[e]) L->csr_start[dst[e] + 1]++;
            if (src[e]) L->csr_start[src[e] + 1]++;
        }
        for (int k = 0; k <= N; k++) L->csr_start[k + 1] += L->csr_start[k];
        int32_t *fill = alloc(N + 1);
        ok = fill != NULL;
        for (int k = 0; ok && k <= N; k++) fill[k] = L->csr_start[k];
        for (int e = 0; ok && e < E; e++) {
            if (dst[e]) { L->csr_edge[fill[dst[e]]] = e; L->csr_coef[fill[dst[e]]++] = L->node_scale[dst[e]]; }
            if (src[e]) { L->csr_edge[fill[src[e]]] = e; L->csr_coef[fill[src[e]]++] = -L->node_scale[src[e]]; }
        }
        free(fill);
    }
    return wrap(L, ok);
}

/* layer_bytes(layer): the memory a layer holds (its weights in every layout) */
static PyObject *py_layer_bytes(PyObject *self, PyObject *capsule) {
    const Layer *L = PyCapsule_GetPointer(capsule, CAPSULE);
    if (L == NULL) return NULL;
    size_t bytes = sizeof *L;
    if (!L->gather)
        for (int p = 0; p < PACK_LEVELS; p++)
            bytes += (size_t)(L->vectors[p] ? L->vectors[p] : 1) * (2 * L->nk + 2) * (p ? LANES : 1) * 4;
    else
        bytes += (size_t)L->edges * (6 + 4) * 4 + (size_t)(L->nodes + 1) * 2 * 4 + (size_t)(L->nodes + 2) * 4;
    return PyLong_FromSize_t(bytes);
}

/* ------------------------------------------------------------------ solve */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* The rows of a solve cut into kernel-sized pieces: 16-row blocks, then the tail, whose rows go
 * to a packed dense level or the gather row kernel. Each piece owns its state. */
typedef struct {
    int row0, rows;  /* rows of the batch it holds */
    int level;       /* dense: packing level; gather: 0 = block, else rows per row kernel */
    float *state;    /* dense: NK + 1 vectors; gather block: N + 2 vectors; gather rows: (N + 2) * rows floats */
} Piece;

typedef struct {
    int n, N, gather, nk;
    Piece p[];
} Pieces;

static int pow2_at_least(int n) { int p = 1; while (p < n) p *= 2; return p; }

static size_t piece_floats(const Pieces *P, const Piece *q) {
    if (!P->gather) return (size_t)(P->nk + 1) * LANES;
    return q->level ? (size_t)(P->N + 2) * q->level : (size_t)(P->N + 2) * LANES;
}

/* lane of row r in a piece, and the piece's lanes per row (a packed dense piece tiles its rows) */
static void piece_lanes(const Pieces *P, const Piece *q, int *period, int *copies) {
    if (!P->gather && q->level) { *period = LANES >> q->level; *copies = 1 << q->level; }
    else { *period = LANES; *copies = 1; }
}

/* address of (row r of the piece, state row j) where j = 0..N-1 voltages, N = l */
static float *at(const Pieces *P, const Piece *q, int r, int j) {
    if (P->gather && q->level) return q->state + (size_t)(j == P->N ? P->N + 1 : j + 1) * q->level + r;
    if (P->gather) return q->state + (size_t)(j == P->N ? P->N + 1 : j + 1) * LANES + r;
    return q->state + (size_t)(j == P->N ? P->nk : j) * LANES + r;
}

static Pieces *cut(int batch, int N, int gather, int max_edges) {
    int full = batch / LANES, tail = batch % LANES, n = full + (tail > 0);
    Pieces *P = calloc(1, sizeof *P + (n ? n : 1) * sizeof(Piece));
    if (P == NULL) return NULL;
    P->n = n; P->N = N; P->gather = gather; P->nk = pow2_at_least(N);
    for (int i = 0; i < n; i++) {
        Piece *q = &P->p[i];
        q->row0 = i * LANES;
        q->rows = i < full ? LANES : tail;
        q->level = 0;
        if (q->rows < LANES) {
            int r = pow2_at_least(q->rows);
            if (!gather) { q->level = 0; while ((LANES >> q->level) > r) q->level++; }
            else if (r <= ROW_KERNEL_MAX && (long)r * max_edges <= ROW_KERNEL_PAIRS) q->level = r;
        }
        q->state = alloc(piece_floats(P, q));
        if (q->state == NULL) {
            for (int k = 0; k < i; k++) free(P->p[k].state);
            free(P);
            return NULL;
        }
    }
    return P;
}

static void release(Pieces *P) {
    for (int i = 0; i < P->n; i++) free(P->p[i].state);
    free(P);
}

static void load_rows(Pieces *P, const float *x, const float *ell) {
    for (int i = 0; i < P->n; i++) {
        Piece *q = &P->p[i];
        int period, copies;
        piece_lanes(P, q, &period, &copies);
        for (int c = 0; c < copies; c++)
            for (int r = 0; r < q->rows; r++) {
                const size_t row = q->row0 + r;
                for (int j = 0; j < P->N; j++) at(P, q, c * period + r, j)[0] = x[row * P->N + j];
                at(P, q, c * period + r, P->N)[0] = ell ? ell[row] : 0.f;
            }
    }
}

static void store_rows(const Pieces *P, float *x, float *ell) {
    for (int i = 0; i < P->n; i++) {
        const Piece *q = &P->p[i];
        for (int r = 0; r < q->rows; r++) {
            const size_t row = q->row0 + r;
            for (int j = 0; j < P->N; j++) x[row * P->N + j] = at(P, q, r, j)[0];
            ell[row] = at(P, q, r, P->N)[0];
        }
    }
}

static int finite_rows(const Pieces *P) {
    for (int i = 0; i < P->n; i++)
        for (int r = 0; r < P->p[i].rows; r++)
            for (int j = 0; j <= P->N; j++)
                if (!isfinite(at(P, &P->p[i], r, j)[0])) return 0;
    return 1;
}

static long work_per_step(const Layer *L, const Pieces *P) {
    long units = 0;
    for (int i = 0; i < P->n; i++) {
        const Piece *q = &P->p[i];
        units += !L->gather ? L->vectors[q->level] : q->level ? (long)L->edges * q->level / LANES + L->edges / 4
                                                                : L->edges;
    }
    return units > 0 ? units : 1;
}

static void run_steps(const Layer *L, Pieces *P, float *scratch, int n_steps, float h, int with_div) {
    for (int i = 0; i < P->n; i++) {
        Piece *q = &P->p[i];
        if (!L->gather) dense_steps(L, q->level, (vf *)q->state, n_steps, h, with_div);
        else if (q->level) gather_row_steps(L, q->level, q->state, scratch, n_steps, h, with_div);
        else gather_block_steps(L, (vf *)q->state, (vf *)scratch, n_steps, h, with_div);
    }
}

typedef struct { int status; long steps, ran; int position; } Outcome;

static Outcome solve_layers(const Layer **layers, const int *steps, int n_layers, Pieces *P, float *scratch,
                            int with_div, long max_steps, double deadline) {
    Outcome out = {SUCCESS, 0, 0, 0};
    for (int k = 0; k < n_layers; k++) {
        const Layer *L = layers[k];
        const int n = steps[k];
        const float h = (float)(L->duration / n);
        long chunk = CHUNK_WORK / work_per_step(L, P);
        chunk = chunk < 1 ? 1 : chunk;
        out.position = k;
        for (int done = 0; done < n;) {
            int granted = 0;
            while (granted < chunk && done + granted < n) {
                out.steps++;
                if (out.steps > max_steps) { out.status = MAX_STEPS; break; }
                if (now_s() > deadline) { out.status = TIMEOUT; break; }
                granted++;
            }
            run_steps(L, P, scratch, granted, h, with_div);
            done += granted;
            out.ran += granted;
            if (out.status != SUCCESS) return out;
        }
        if (!finite_rows(P)) { out.status = NONFINITE; return out; }
        if (now_s() > deadline) { out.status = TIMEOUT; return out; }
    }
    return out;
}

static PyObject *py_solve(PyObject *self, PyObject *args) {
    PyObject *layer_list, *step_list;
    unsigned long long x_p, x_out_p, ell_in_p, ell_out_p;
    Py_ssize_t batch;
    int with_div;
    long long max_steps;
    double wall_left;
    if (!PyArg_ParseTuple(args, "O!O!KnKKKpLd", &PyTuple_Type, &layer_list, &PyTuple_Type, &step_list, &x_p, &batch,
                          &x_out_p, &ell_in_p, &ell_out_p, &with_div, &max_steps, &wall_left))
        return NULL;
    const double started = now_s();
    const int n_layers = (int)PyTuple_GET_SIZE(layer_list);
    if (n_layers < 1 || n_layers > 4096 || PyTuple_GET_SIZE(step_list) != n_layers || batch < 0)
        return PyErr_Format(PyExc_ValueError, "_rk4.solve: %d layers, %zd step counts, batch %zd", n_layers,
                            PyTuple_GET_SIZE(step_list), batch);
    const Layer *layers[4096];
    int steps[4096];
    for (int k = 0; k < n_layers; k++) {
        layers[k] = PyCapsule_GetPointer(PyTuple_GET_ITEM(layer_list, k), CAPSULE);
        if (layers[k] == NULL) return NULL;
        long s = PyLong_AsLong(PyTuple_GET_ITEM(step_list, k));
        if (s == -1 && PyErr_Occurred()) return NULL;
        if (s < 1 || s > 1 << 30) return PyErr_Format(PyExc_ValueError, "_rk4.solve: %ld steps", s);
        steps[k] = (int)s;
        if (layers[k]->nodes != layers[0]->nodes || layers[k]->gather != layers[0]->gather)
            return PyErr_Format(PyExc_ValueError, "_rk4.solve: layers differ in node count or form");
    }
    const int N = layers[0]->nodes, gather = layers[0]->gather;
    int max_edges = 0;
    for (int k = 0; k < n_layers; k++) max_edges = layers[k]->edges > max_edges ? layers[k]->edges : max_edges;
    Pieces *P = cut((int)batch, N, gather, max_edges);
    size_t scratch_floats = 0;
    if (gather && P)
        for (int i = 0; i < P->n; i++)
            for (int k = 0; k < n_layers; k++) {
                size_t f = P->p[i].level ? gather_row_scratch(layers[k], P->p[i].level)
                                         : 3 * (size_t)(N + 2) * LANES;
                scratch_floats = f > scratch_floats ? f : scratch_floats;
            }
    float *scratch = gather ? alloc(scratch_floats) : NULL;
    if (P == NULL || (gather && scratch == NULL)) {
        if (P) release(P);
        free(scratch);
        return PyErr_NoMemory();
    }
    Outcome out;
    Py_BEGIN_ALLOW_THREADS
    load_rows(P, (const float *)(uintptr_t)x_p, (const float *)(uintptr_t)ell_in_p);
    out = solve_layers(layers, steps, n_layers, P, scratch, with_div, max_steps, started + wall_left);
    store_rows(P, (float *)(uintptr_t)x_out_p, (float *)(uintptr_t)ell_out_p);
    Py_END_ALLOW_THREADS
    release(P);
    free(scratch);
    return Py_BuildValue("illi", out.status, out.steps, out.ran, out.position);
}

/* ------------------------------------------------------------------ measurements */

CLONES static void activate_array(int kernel, int feature, float leaky, const float *z, float *y, float *g,
                                  Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        vf v = activate(kernel, leaky, vload(z + i));
        vstore(y + i, v);
        if (g) vstore(g + i, slope_feature(feature, v));
    }
    if (i < n) { /* the tail through a zero-padded vector */
        float buf[LANES] = {0}, out[LANES];
        memcpy(buf, z + i, (n - i) * 4);
        vf v = activate(kernel, leaky, vload(buf));
        vstore(out, v);
        memcpy(y + i, out, (n - i) * 4);
        if (g) { vstore(out, slope_feature(feature, v)); memcpy(g + i, out, (n - i) * 4); }
    }
}

static PyObject *py_activate(PyObject *self, PyObject *args) {
    int kernel, feature;
    float leaky;
    unsigned long long z, y, g;
    Py_ssize_t n;
    long rounds = 1;
    if (!PyArg_ParseTuple(args, "iifKKKn|l", &kernel, &feature, &leaky, &z, &y, &g, &n, &rounds)) return NULL;
    if (!check_common(1, 0, kernel, feature) || n < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    for (long r = 0; r < rounds; r++)
        activate_array(kernel, feature, leaky, (const float *)(uintptr_t)z, (float *)(uintptr_t)y,
                       (float *)(uintptr_t)g, n);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* 12 independent FMA chains of LANES lanes (enough to cover the FMA latency on two pipes), n
 * rounds: 2 * 12 * LANES * n FLOPs. Returns a sum so nothing is optimised away. */
CLONES static float fma_rounds(long n) {
    vf a[12], m = splat(0.999999f), c = splat(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = splat(1.f + i);
    for (long r = 0; r < n; r++)
        for (int i = 0; i < 12; i++) a[i] = a[i] * m + c;
    vf s = splat(0.f);
    for (int i = 0; i < 12; i++) s += a[i];
    float out = 0.f;
    for (int l = 0; l < LANES; l++) out += s[l];
    return out;
}

static PyObject *py_fma_loop(PyObject *self, PyObject *args) {
    long n;
    if (!PyArg_ParseTuple(args, "l", &n)) return NULL;
    float r;
    Py_BEGIN_ALLOW_THREADS
    r = fma_rounds(n);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(dd)", (double)r, 2.0 * 12 * LANES * (double)n);
}

static PyMethodDef methods[] = {
    {"dense_layer", py_dense_layer, METH_VARARGS, "A dense-form layer for solve (see module doc)."},
    {"gather_layer", py_gather_layer, METH_VARARGS, "A gather-form layer for solve (see module doc)."},
    {"layer_bytes", py_layer_bytes, METH_O, "Bytes a layer holds."},
    {"solve", py_solve, METH_VARARGS, "One whole RK4 solve over layers, with the budget (see module doc)."},
    {"activate", py_activate, METH_VARARGS, "The kernels' activation and slope feature over an array."},
    {"fma_loop", py_fma_loop, METH_VARARGS, "n rounds of register-resident FMAs: (result, flops)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rk4",
                                    "Compiled RK4 over dense- and gather-form layers (models.engine_native).", -1,
                                    methods};

static PyObject *names(const char **list, int n) {
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t != NULL && i < n; i++) PyTuple_SET_ITEM(t, i, PyUnicode_FromString(list[i]));
    return t;
}

PyMODINIT_FUNC PyInit__rk4(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObject(m, "KERNELS", names(KERNELS, N_KERNELS)) < 0 ||
        PyModule_AddObject(m, "FEATURES", names(FEATURES, N_FEATURES)) < 0 ||
        PyModule_AddIntConstant(m, "LANES", LANES) < 0 ||
        PyModule_AddIntConstant(m, "DENSE_MAX_NODES", DENSE_MAX_NODES) < 0 ||
        PyModule_AddIntConstant(m, "ROW_KERNEL_MAX", ROW_KERNEL_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
