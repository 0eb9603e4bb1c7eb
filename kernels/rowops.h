/*
 * Row primitives of the gradient kernels: dot products and axpy updates of one row.
 *
 * Dense rows: vector code without -ffast-math. A dot product keeps 16 partial sums in four
 * 4-double vectors (lanes j mod 16), adds leftover 4-element chunks into the first vector
 * and the last n mod 4 entries in order, and combines the lanes in a fixed tree (gd_dot and
 * gd_axpy_dot share that code). With GCC on x86-64 Linux each dense primitive is compiled
 * three times (baseline SSE2, x86-64-v3 = AVX2, x86-64-v4 = AVX-512) and the loader picks
 * the best one the CPU supports (target_clones), so one build runs everywhere at full width;
 * the AVX builds contract multiply-adds into FMA (-ffp-contract=fast in meson.build), so
 * their sums can differ from the SSE2 build's in the last bits.
 *
 * Sparse (CSR) rows: scalar gathers and scatters with four partial sums. Every column
 * index is checked against the parameter length; the dot product returns the number of
 * indices out of range through `bad`, so that the caller can skip the row and report it.
 */
#ifndef GDCODE_ROWOPS_H
#define GDCODE_ROWOPS_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(GDCODE_NO_CLONES)
#define GD_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define GD_CLONES
#endif

/* ---- dense rows ------------------------------------------------------------------- */

#if defined(__GNUC__)
/* GCC and Clang vector extensions, 4 doubles: native to AVX2 and AVX-512, a pair of
 * registers in SSE2. Loads and stores are macros, so no vector crosses a call between code
 * compiled for different instruction sets. */
typedef double gd_v4d __attribute__((vector_size(32)));
typedef double gd_v4d_u __attribute__((vector_size(32), aligned(8), may_alias));
#define gd_load_f64(p) (*(const gd_v4d_u *)(p))
/* element by element: GCC makes this one vcvtps2pd from memory, where a float-vector load
 * and __builtin_convertvector become two half conversions with a false dependency */
#define gd_load_f32(p) ((gd_v4d){(p)[0], (p)[1], (p)[2], (p)[3]})
#define gd_store_f64(p, v) (*(gd_v4d_u *)(p) = (v))

/* Dot product of x and w; STEP(j) is a statement run for every 4-element chunk j..j+3
 * (and ASTEP(j) for each leftover entry), for the fused update of gd_axpy_dot. */
#define GD_DOT(SUFFIX, x, w, n, STEP, ASTEP)                                              \
    gd_v4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, s_;                                    \
    double t_ = 0.0;                                                                      \
    ptrdiff_t j = 0;                                                                      \
    for (; j + 16 <= n; j += 16) {                                                        \
        GD_PREFETCH_##SUFFIX(x + j)                                                       \
        a0 += gd_load_##SUFFIX(x + j) * gd_load_f64(w + j);                               \
        a1 += gd_load_##SUFFIX(x + j + 4) * gd_load_f64(w + j + 4);                       \
        a2 += gd_load_##SUFFIX(x + j + 8) * gd_load_f64(w + j + 8);                       \
        a3 += gd_load_##SUFFIX(x + j + 12) * gd_load_f64(w + j + 12);                     \
        STEP(j) STEP(j + 4) STEP(j + 8) STEP(j + 12)                                      \
    }                                                                                     \
    for (; j + 4 <= n; j += 4) {                                                          \
        a0 += gd_load_##SUFFIX(x + j) * gd_load_f64(w + j);                               \
        STEP(j)                                                                           \
    }                                                                                     \
    for (; j < n; j++) {                                                                  \
        t_ += (double)x[j] * w[j];                                                        \
        ASTEP(j)                                                                          \
    }                                                                                     \
    s_ = (a0 + a2) + (a1 + a3);                                                           \
    return ((s_[0] + s_[2]) + (s_[1] + s_[3])) + t_;

/* Software prefetch of the row stream, GD_PREFETCH_BYTES ahead of the dot product, into L2
 * (prefetcht2: it does not hold an L1 fill buffer as long as a demand miss does). The fused
 * loop has about twice the instructions per cache line of X of a bare dot product, so the
 * out-of-order window alone keeps fewer lines in flight than memory latency needs; with
 * this prefetch the dense kernels stream at about 90% of a bare read instead of about 80%
 * (200000 x 200 float64, one thread; 2 to 3 KB measured best, 1 KB and 4 KB slower).
 * A prefetch past the end of X is harmless: prefetches never fault. */
#define GD_PREFETCH_BYTES 2560
#define GD_PREFETCH_LINE(p) __builtin_prefetch((const char *)(p) + GD_PREFETCH_BYTES, 0, 1);
/* one 16-element step reads 128 bytes of float64 or 64 bytes of float32 */
#define GD_PREFETCH_f64(p) GD_PREFETCH_LINE(p) GD_PREFETCH_LINE((const char *)(p) + 64)
#define GD_PREFETCH_f32(p) GD_PREFETCH_LINE(p)
#define GD_NOSTEP(j)
#define GD_AXPY_STEP(SUFFIX, j) gd_store_f64(g + (j), gd_load_f64(g + (j)) + av * gd_load_##SUFFIX(xo + (j)));
#define GD_AXPY_STEP_f64(j) GD_AXPY_STEP(f64, j)
#define GD_AXPY_STEP_f32(j) GD_AXPY_STEP(f32, j)
#define GD_AXPY_ASTEP(j) g[j] += a * (double)xo[j];

#define GD_DENSE_DOTS(SUFFIX, T)                                                          \
GD_CLONES static double gd_dot_##SUFFIX(const T *x, const double *w, ptrdiff_t n)          \
{                                                                                         \
    GD_DOT(SUFFIX, x, w, n, GD_NOSTEP, GD_NOSTEP)                                         \
}                                                                                         \
                                                                                          \
/* The dense kernels' software pipeline: returns gd_dot(x, w) and, in the same loop, does \
 * g += a * xo for the previous row xo, still in L1, so that the loads of the new row from \
 * memory and the arithmetic on the cached one overlap. */                                \
GD_CLONES static double gd_axpy_dot_##SUFFIX(double a, const T *xo, double *g, const T *x, \
                                             const double *w, ptrdiff_t n)                \
{                                                                                         \
    const gd_v4d av = {a, a, a, a};                                                       \
    GD_DOT(SUFFIX, x, w, n, GD_AXPY_STEP_##SUFFIX, GD_AXPY_ASTEP)                         \
}                                                                                         \
                                                                                          \
/* the dot products of one row x with four parameter rows (softmax classes) */            \
GD_CLONES static void gd_mdot4_##SUFFIX(const double *w0, const double *w1,                \
                                        const double *w2, const double *w3, const T *x,    \
                                        ptrdiff_t n, double *out)                          \
{                                                                                         \
    gd_v4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, xj;                                    \
    double t0 = 0.0, t1 = 0.0, t2 = 0.0, t3 = 0.0;                                        \
    ptrdiff_t j = 0;                                                                      \
    for (; j + 4 <= n; j += 4) {                                                          \
        xj = gd_load_##SUFFIX(x + j);                                                     \
        a0 += xj * gd_load_f64(w0 + j);                                                   \
        a1 += xj * gd_load_f64(w1 + j);                                                   \
        a2 += xj * gd_load_f64(w2 + j);                                                   \
        a3 += xj * gd_load_f64(w3 + j);                                                   \
    }                                                                                     \
    for (; j < n; j++) {                                                                  \
        t0 += (double)x[j] * w0[j];                                                       \
        t1 += (double)x[j] * w1[j];                                                       \
        t2 += (double)x[j] * w2[j];                                                       \
        t3 += (double)x[j] * w3[j];                                                       \
    }                                                                                     \
    out[0] = ((a0[0] + a0[2]) + (a0[1] + a0[3])) + t0;                                    \
    out[1] = ((a1[0] + a1[2]) + (a1[1] + a1[3])) + t1;                                    \
    out[2] = ((a2[0] + a2[2]) + (a2[1] + a2[3])) + t2;                                    \
    out[3] = ((a3[0] + a3[2]) + (a3[1] + a3[3])) + t3;                                    \
}

#else  /* plain C: the same sums, lane by lane */

#define GD_DENSE_DOTS(SUFFIX, T)                                                          \
static double gd_axpy_dot_##SUFFIX(double a, const T *xo, double *g, const T *x,           \
                                   const double *w, ptrdiff_t n)                          \
{                                                                                         \
    double acc[16] = {0}, v[4], t = 0.0;                                                  \
    ptrdiff_t j = 0;                                                                      \
    int k;                                                                                \
    for (; j + 16 <= n; j += 16)                                                          \
        for (k = 0; k < 16; k++)                                                          \
            acc[k] += (double)x[j + k] * w[j + k];                                        \
    for (; j + 4 <= n; j += 4)                                                            \
        for (k = 0; k < 4; k++)                                                           \
            acc[k] += (double)x[j + k] * w[j + k];                                        \
    for (; j < n; j++)                                                                    \
        t += (double)x[j] * w[j];                                                         \
    if (a != 0.0)                                                                         \
        for (j = 0; j < n; j++)                                                           \
            g[j] += a * (double)xo[j];                                                    \
    for (k = 0; k < 4; k++)                                                               \
        v[k] = (acc[k] + acc[k + 8]) + (acc[k + 4] + acc[k + 12]);                        \
    return ((v[0] + v[2]) + (v[1] + v[3])) + t;                                           \
}                                                                                         \
                                                                                          \
static double gd_dot_##SUFFIX(const T *x, const double *w, ptrdiff_t n)                   \
{                                                                                         \
    return gd_axpy_dot_##SUFFIX(0.0, x, NULL, x, w, n);                                   \
}                                                                                         \
                                                                                          \
static void gd_mdot4_##SUFFIX(const double *w0, const double *w1, const double *w2,        \
                              const double *w3, const T *x, ptrdiff_t n, double *out)      \
{                                                                                         \
    out[0] = gd_dot_##SUFFIX(x, w0, n);                                                   \
    out[1] = gd_dot_##SUFFIX(x, w1, n);                                                   \
    out[2] = gd_dot_##SUFFIX(x, w2, n);                                                   \
    out[3] = gd_dot_##SUFFIX(x, w3, n);                                                   \
}
#endif

#define GD_DENSE_UPDATES(SUFFIX, T)                                                       \
/* g += a * x */                                                                          \
GD_CLONES static void gd_axpy_##SUFFIX(double a, const T *x, double *g, ptrdiff_t n)       \
{                                                                                         \
    for (ptrdiff_t j = 0; j < n; j++)                                                     \
        g[j] += a * (double)x[j];                                                         \
}                                                                                         \
                                                                                          \
/* g_k += a[k] x for the four gradient rows g0..g3 (softmax classes), reading x once */    \
GD_CLONES static void gd_maxpy4_##SUFFIX(const double *a, const T *x, double *g0,          \
                                         double *g1, double *g2, double *g3, ptrdiff_t n)  \
{                                                                                         \
    const double a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];                              \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        const double xj = (double)x[j];                                                   \
        g0[j] += a0 * xj;                                                                 \
        g1[j] += a1 * xj;                                                                 \
        g2[j] += a2 * xj;                                                                 \
        g3[j] += a3 * xj;                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* w = s * w + a * x (one SGD step with L2 shrinkage) */                                  \
GD_CLONES static void gd_scale_axpy_##SUFFIX(double s, double a, const T *x, double *w,   \
                                             ptrdiff_t n)                                 \
{                                                                                         \
    for (ptrdiff_t j = 0; j < n; j++)                                                     \
        w[j] = s * w[j] + a * (double)x[j];                                               \
}

GD_DENSE_DOTS(f64, double)
GD_DENSE_DOTS(f32, float)
GD_DENSE_UPDATES(f64, double)
GD_DENSE_UPDATES(f32, float)

/* ---- CSR rows --------------------------------------------------------------------- */

#define GD_SPARSE_OPS(SUFFIX, T, I)                                                       \
static inline double gd_sdot_##SUFFIX(const T *v, const I *idx, ptrdiff_t nnz,            \
                                      const double *w, ptrdiff_t d, ptrdiff_t *bad)       \
{                                                                                         \
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;                                        \
    ptrdiff_t k = 0, nbad = 0;                                                            \
    for (; k + 4 <= nnz; k += 4) {                                                        \
        uint64_t c0 = (uint64_t)idx[k], c1 = (uint64_t)idx[k + 1];                        \
        uint64_t c2 = (uint64_t)idx[k + 2], c3 = (uint64_t)idx[k + 3];                    \
        if (c0 < (uint64_t)d) a0 += (double)v[k] * w[c0]; else nbad++;                    \
        if (c1 < (uint64_t)d) a1 += (double)v[k + 1] * w[c1]; else nbad++;                \
        if (c2 < (uint64_t)d) a2 += (double)v[k + 2] * w[c2]; else nbad++;                \
        if (c3 < (uint64_t)d) a3 += (double)v[k + 3] * w[c3]; else nbad++;                \
    }                                                                                     \
    for (; k < nnz; k++) {                                                                \
        uint64_t c = (uint64_t)idx[k];                                                    \
        if (c < (uint64_t)d) a0 += (double)v[k] * w[c]; else nbad++;                      \
    }                                                                                     \
    *bad += nbad;                                                                         \
    return (a0 + a1) + (a2 + a3);                                                         \
}                                                                                         \
                                                                                          \
/* g[idx] += a * v; the caller has checked the indices with gd_sdot */                    \
static inline void gd_saxpy_##SUFFIX(double a, const T *v, const I *idx, ptrdiff_t nnz,   \
                                     double *g)                                           \
{                                                                                         \
    for (ptrdiff_t k = 0; k < nnz; k++)                                                   \
        g[idx[k]] += a * (double)v[k];                                                    \
}                                                                                         \
                                                                                          \
/* The K scores s[k] = sum_q v[q] W[k, idx[q]] of one row, with W stored column-major    \
 * (wt[j * K + k] = W[k, j]) so that each nonzero reads K adjacent numbers. */             \
static inline void gd_sdotk_##SUFFIX(const T *v, const I *idx, ptrdiff_t nnz,             \
                                     const double *wt, ptrdiff_t K, ptrdiff_t d,          \
                                     double *s, ptrdiff_t *bad)                           \
{                                                                                         \
    ptrdiff_t q, k;                                                                       \
    for (k = 0; k < K; k++)                                                               \
        s[k] = 0.0;                                                                       \
    for (q = 0; q < nnz; q++) {                                                           \
        uint64_t c = (uint64_t)idx[q];                                                    \
        if (c >= (uint64_t)d) {                                                           \
            (*bad)++;                                                                     \
            continue;                                                                     \
        }                                                                                 \
        const double vq = (double)v[q], *r = wt + c * K;                                  \
        for (k = 0; k < K; k++)                                                           \
            s[k] += vq * r[k];                                                            \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* gt[idx[q] * K + k] += a[k] v[q]: the update of gd_sdotk's column-major layout */       \
static inline void gd_saxpyk_##SUFFIX(const double *a, const T *v, const I *idx,          \
                                      ptrdiff_t nnz, double *gt, ptrdiff_t K)             \
{                                                                                         \
    for (ptrdiff_t q = 0; q < nnz; q++) {                                                 \
        const double vq = (double)v[q];                                                   \
        double *r = gt + (ptrdiff_t)idx[q] * K;                                           \
        for (ptrdiff_t k = 0; k < K; k++)                                                 \
            r[k] += a[k] * vq;                                                            \
    }                                                                                     \
}

GD_SPARSE_OPS(f64_i32, double, int32_t)
GD_SPARSE_OPS(f64_i64, double, int64_t)
GD_SPARSE_OPS(f32_i32, float, int32_t)
GD_SPARSE_OPS(f32_i64, float, int64_t)

#endif /* GDCODE_ROWOPS_H */
