/*
 * Row primitives of the gradient kernels: dot products and axpy updates of one or two rows,
 * the logistic loss of four rows, softmax scores and updates, stream prefetch, and the CSR
 * row loops.
 *
 * Dense rows: vector code without -ffast-math. A dot product keeps 16 partial sums in four
 * 4-double vectors (lanes j mod 16), adds leftover 4-element chunks into the first vector
 * and the last n mod 4 entries in order, and combines the lanes in a fixed tree (gd_dot and
 * gd_axpy_dot share that code; the two-row gd_axpy_dot2 keeps the same partial sums for
 * each row, so its margins agree with gd_dot's to the last bit or two). With GCC on x86-64
 * Linux each dense primitive and each CSR row loop is compiled three times (baseline SSE2,
 * x86-64-v3 = AVX2, x86-64-v4 = AVX-512) and the loader picks the best one the CPU supports
 * (target_clones), so one build runs everywhere at full width; the AVX builds contract
 * multiply-adds into FMA (-ffp-contract=fast in meson.build), so their sums can differ from
 * the SSE2 build's in the last bits. The logistic loss of four rows (gd_logistic4) has its
 * own vector exp and log1p. How far ahead a row stream is prefetched is an argument: the
 * best distance depends on the machine (gdcode/kernels/calibrate.py measures it), and it
 * never changes a result.
 *
 * Sparse (CSR) rows: scalar gathers and scatters, a dot product in four partial sums. Every
 * column index is checked against the parameter length; the dot product counts indices out
 * of range into `bad`, so that the caller can skip the row and report it. Parameters and
 * gradient are read at idx * stride: stride 2 on an interleaved copy (w_j and g_j adjacent)
 * makes the update of a row hit the cache lines its dot product has just brought into L1.
 * The row loops (gd_csr_rows, gd_csr_logistic_rows, gd_csr_softmax_rows and its two-pass
 * twin gd_csr_softmax_passes) are here rather than in Cython so that they are compiled for
 * the CPU with their primitives inlined.
 */
#ifndef GDCODE_ROWOPS_H
#define GDCODE_ROWOPS_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(GDCODE_NO_CLONES)
#define GD_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define GD_CLONES
#endif
/* Row primitives that the row loops (compiled once per instruction set, GD_CLONES) call:
 * always inlined, so that each loop's clone compiles them for its own instruction set. */
#if defined(__GNUC__)
#define GD_INLINE static inline __attribute__((always_inline))
#else
#define GD_INLINE static inline
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
        GD_PREFETCH_STEP_##SUFFIX(x + j, ahead)                                           \
        a0 += gd_load_##SUFFIX(x + j) * gd_load_f64(w + j);                               \
        a1 += gd_load_##SUFFIX(x + j + 4) * gd_load_f64(w + j + 4);                       \
        a2 += gd_load_##SUFFIX(x + j + 8) * gd_load_f64(w + j + 8);                       \
        a3 += gd_load_##SUFFIX(x + j + 12) * gd_load_f64(w + j + 12);                     \
        STEP(j) STEP(j + 4) STEP(j + 8) STEP(j + 12)                                      \
    }                                                                                     \
    for (; j + 4 <= n; j += 4) {                                                          \
        GD_PREFETCH_LINE(x + j, ahead)                                                    \
        a0 += gd_load_##SUFFIX(x + j) * gd_load_f64(w + j);                               \
        STEP(j)                                                                           \
    }                                                                                     \
    for (; j < n; j++) {                                                                  \
        t_ += (double)x[j] * w[j];                                                        \
        ASTEP(j)                                                                          \
    }                                                                                     \
    s_ = (a0 + a2) + (a1 + a3);                                                           \
    return ((s_[0] + s_[2]) + (s_[1] + s_[3])) + t_;

/* The dot products of two rows x0, x1 with w, each with the partial sums of GD_DOT, and
 * in the same loop g += a0 xo0 + a1 xo1 for two earlier rows: one load and store of g for
 * two updates. */
#define GD_DOT2(SUFFIX)                                                                   \
    gd_v4d p0 = {0}, p1 = {0}, p2 = {0}, p3 = {0}, q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0}; \
    gd_v4d wj, s_;                                                                        \
    const gd_v4d av0 = {a0, a0, a0, a0}, av1 = {a1, a1, a1, a1};                          \
    double tp = 0.0, tq = 0.0;                                                            \
    ptrdiff_t j = 0;                                                                      \
    for (; j + 16 <= n; j += 16) {                                                        \
        GD_PREFETCH_STEP_##SUFFIX(x0 + j, ahead)                                         \
        GD_PREFETCH_STEP_##SUFFIX(x1 + j, ahead)                                         \
        wj = gd_load_f64(w + j);                                                          \
        p0 += gd_load_##SUFFIX(x0 + j) * wj;                                              \
        q0 += gd_load_##SUFFIX(x1 + j) * wj;                                              \
        wj = gd_load_f64(w + j + 4);                                                      \
        p1 += gd_load_##SUFFIX(x0 + j + 4) * wj;                                          \
        q1 += gd_load_##SUFFIX(x1 + j + 4) * wj;                                          \
        wj = gd_load_f64(w + j + 8);                                                      \
        p2 += gd_load_##SUFFIX(x0 + j + 8) * wj;                                          \
        q2 += gd_load_##SUFFIX(x1 + j + 8) * wj;                                          \
        wj = gd_load_f64(w + j + 12);                                                     \
        p3 += gd_load_##SUFFIX(x0 + j + 12) * wj;                                         \
        q3 += gd_load_##SUFFIX(x1 + j + 12) * wj;                                         \
        GD_AXPY2_STEP(SUFFIX, j) GD_AXPY2_STEP(SUFFIX, j + 4)                             \
        GD_AXPY2_STEP(SUFFIX, j + 8) GD_AXPY2_STEP(SUFFIX, j + 12)                        \
    }                                                                                     \
    for (; j + 4 <= n; j += 4) {                                                          \
        GD_PREFETCH_LINE(x0 + j, ahead)                                                  \
        GD_PREFETCH_LINE(x1 + j, ahead)                                                  \
        wj = gd_load_f64(w + j);                                                          \
        p0 += gd_load_##SUFFIX(x0 + j) * wj;                                              \
        q0 += gd_load_##SUFFIX(x1 + j) * wj;                                              \
        GD_AXPY2_STEP(SUFFIX, j)                                                          \
    }                                                                                     \
    for (; j < n; j++) {                                                                  \
        tp += (double)x0[j] * w[j];                                                       \
        tq += (double)x1[j] * w[j];                                                       \
        g[j] = (g[j] + a0 * (double)xo0[j]) + a1 * (double)xo1[j];                        \
    }                                                                                     \
    s_ = (p0 + p2) + (p1 + p3);                                                           \
    out[0] = ((s_[0] + s_[2]) + (s_[1] + s_[3])) + tp;                                    \
    s_ = (q0 + q2) + (q1 + q3);                                                           \
    out[1] = ((s_[0] + s_[2]) + (s_[1] + s_[3])) + tq;
#define GD_AXPY2_STEP(SUFFIX, j)                                                          \
    gd_store_f64(g + (j), gd_load_f64(g + (j)) + av0 * gd_load_##SUFFIX(xo0 + (j))        \
                          + av1 * gd_load_##SUFFIX(xo1 + (j)));

/* Software prefetch of the row stream into L2 (prefetcht2: it does not hold an L1 fill
 * buffer as long as a demand miss does), `ahead` bytes ahead of the dot product (an
 * argument of every dense primitive; 0: no software prefetch). The fused loop has about
 * twice the instructions per cache line of X of a bare dot product, so the out-of-order
 * window alone keeps fewer lines in flight than memory latency needs. The best distance
 * depends on the machine: 2.5-3 KB for float64 and 4-6 KB for float32 on the Xeon
 * development VM (the built-in defaults below), 7-16 KB on an AMD EPYC (Zen 4) VM, where
 * 3 KB streams at 55% of a bare read and 8 KB at 90%; gdcode.kernels.calibrate measures it
 * per machine. Prefetching every other line instead of every line is much slower. A
 * prefetch past the end of X is harmless: prefetches never fault. */
#define GD_PREFETCH_LINE(p, bytes) \
    if ((bytes) > 0) __builtin_prefetch((const char *)(p) + (bytes), 0, 1);
/* every line of one 16-element step: 128 bytes of float64, 64 of float32 (the 4-element
 * steps after them prefetch one line each: 200 columns leave 8); bytes <= 0: none */
#define GD_PREFETCH_STEP_f64(p, bytes)                                                    \
    if ((bytes) > 0) {                                                                    \
        __builtin_prefetch((const char *)(p) + (bytes), 0, 1);                            \
        __builtin_prefetch((const char *)(p) + (bytes) + 64, 0, 1);                       \
    }
#define GD_PREFETCH_STEP_f32(p, bytes) GD_PREFETCH_LINE(p, bytes)
/* built-in defaults, measured on the Xeon VM: one row at a time (Hogwild's rows) 2.5 KB for
 * float64 (1 KB and 4 KB slower), 4 KB for float32 (1.3 KB and 7.5 KB slower); two rows at
 * a time (gd_axpy_dot2, the kernels' default for every loop) 3 KB for float64 (2.5 KB and
 * 3.75 KB slightly slower), 6 KB for float32 (4 KB and 8 KB alike) */
#define GD_AHEAD_f64 2560
#define GD_AHEAD_f32 4096
#define GD_AHEAD2_f64 3072
#define GD_AHEAD2_f32 6144
#define GD_NOSTEP(j)
#define GD_AXPY_STEP(SUFFIX, j) gd_store_f64(g + (j), gd_load_f64(g + (j)) + av * gd_load_##SUFFIX(xo + (j)));
#define GD_AXPY_STEP_f64(j) GD_AXPY_STEP(f64, j)
#define GD_AXPY_STEP_f32(j) GD_AXPY_STEP(f32, j)
#define GD_AXPY_ASTEP(j) g[j] += a * (double)xo[j];

#define GD_DENSE_DOTS(SUFFIX, T)                                                          \
GD_CLONES static double gd_dot_##SUFFIX(const T *x, const double *w, ptrdiff_t n,         \
                                        ptrdiff_t ahead)                                  \
{                                                                                         \
    GD_DOT(SUFFIX, x, w, n, GD_NOSTEP, GD_NOSTEP)                                         \
}                                                                                         \
                                                                                          \
/* The dense kernels' software pipeline: returns gd_dot(x, w) and, in the same loop, does \
 * g += a * xo for the previous row xo, still in L1, so that the loads of the new row from \
 * memory and the arithmetic on the cached one overlap. */                                \
GD_CLONES static double gd_axpy_dot_##SUFFIX(double a, const T *xo, double *g, const T *x, \
                                             const double *w, ptrdiff_t n,                \
                                             ptrdiff_t ahead)                             \
{                                                                                         \
    const gd_v4d av = {a, a, a, a};                                                       \
    GD_DOT(SUFFIX, x, w, n, GD_AXPY_STEP_##SUFFIX, GD_AXPY_ASTEP)                         \
}                                                                                         \
                                                                                          \
/* gd_axpy_dot for two rows at once: out[k] = gd_dot(xk, w) and g += a0 xo0 + a1 xo1, with \
 * a quarter fewer instructions per row (a standalone C pass over 200000 x 200 float64     \
 * rows: 20.4 -> 18.8 ms, a bare read's speed; the kernels 5-9% faster) */                 \
GD_CLONES static void gd_axpy_dot2_##SUFFIX(double a0, double a1, const T *xo0,           \
                                            const T *xo1, double *g, const T *x0,         \
                                            const T *x1, const double *w, ptrdiff_t n,    \
                                            double *out, ptrdiff_t ahead)                 \
{                                                                                         \
    GD_DOT2(SUFFIX)                                                                       \
}

#else  /* plain C: the same sums, lane by lane */

#define GD_DENSE_DOTS(SUFFIX, T)                                                          \
static double gd_axpy_dot_##SUFFIX(double a, const T *xo, double *g, const T *x,           \
                                   const double *w, ptrdiff_t n, ptrdiff_t ahead)         \
{                                                                                         \
    double acc[16] = {0}, v[4], t = 0.0;                                                  \
    ptrdiff_t j = 0;                                                                      \
    int k;                                                                                \
    (void)ahead;                                                                          \
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
static double gd_dot_##SUFFIX(const T *x, const double *w, ptrdiff_t n, ptrdiff_t ahead)  \
{                                                                                         \
    return gd_axpy_dot_##SUFFIX(0.0, x, NULL, x, w, n, ahead);                            \
}                                                                                         \
                                                                                          \
static void gd_axpy_dot2_##SUFFIX(double a0, double a1, const T *xo0, const T *xo1,        \
                                  double *g, const T *x0, const T *x1, const double *w,    \
                                  ptrdiff_t n, double *out, ptrdiff_t ahead)              \
{                                                                                         \
    out[0] = gd_axpy_dot_##SUFFIX(a0, xo0, g, x0, w, n, ahead);                           \
    out[1] = gd_axpy_dot_##SUFFIX(a1, xo1, g, x1, w, n, ahead);                           \
}
#endif

#if defined(__GNUC__)
/* ---- the logistic loss of four rows ------------------------------------------------ */

typedef int64_t gd_v4l __attribute__((vector_size(32)));
#define GD_V4L_ABS ((gd_v4l){INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX})
#define GD_V4(c) ((gd_v4d){(c), (c), (c), (c)})
/* where mask, b, else a (mask lanes all ones or all zeros, as vector compares give) */
#define GD_SELECT(mask, b, a) ((gd_v4d)(((gd_v4l)(a) & ~(mask)) | ((gd_v4l)(b) & (mask))))

/* 2^n for integral n in [-1022, 1023] (a vector of doubles), through the exponent bits:
 * n + 1.5 2^52 holds n in its low mantissa bits. Macros, not functions: no vector crosses
 * a call between code compiled for different instruction sets. */
#define GD_SHIFT GD_V4(0x1.8p52)
#define GD_POW2I(n) ((gd_v4d)((((gd_v4l)((n) + GD_SHIFT) - (gd_v4l)GD_SHIFT) + 1023) << 52))

/* e = exp(x) for x <= 0 (NaN stays NaN): Cody-Waite reduction x = n ln2 + r with
 * |r| <= ln2 / 2, a degree-13 Taylor polynomial (truncation below 5e-18) and 2^n in two
 * normal factors, so that results in the subnormal range round once. */
#define GD_EXP_NONPOS(e, x_in)                                                            \
    do {                                                                                  \
        gd_v4d x_ = GD_SELECT((x_in) < GD_V4(-746.0), GD_V4(-746.0), (x_in));             \
        gd_v4d n_ = (x_ * GD_V4(0x1.71547652b82fep0) + GD_SHIFT) - GD_SHIFT;              \
        gd_v4d r_ = (x_ - n_ * GD_V4(6.93147180369123816490e-01))                         \
                    - n_ * GD_V4(1.90821492927058770002e-10);                             \
        /* 1 + r (1 + r t(r)), t = 1/2! + r/3! + ... + r^11/13! by Estrin's scheme: a chain \
         * of 6 multiply-adds instead of Horner's 13 (the logistic and softmax kernels wait  \
         * on it between groups of rows) */                                               \
        const gd_v4d r2_ = r_ * r_, r4_ = r2_ * r2_, r8_ = r4_ * r4_;                      \
        const gd_v4d t0_ = GD_V4(1.0 / 2.0) + r_ * GD_V4(1.0 / 6.0);                       \
        const gd_v4d t1_ = GD_V4(1.0 / 24.0) + r_ * GD_V4(1.0 / 120.0);                    \
        const gd_v4d t2_ = GD_V4(1.0 / 720.0) + r_ * GD_V4(1.0 / 5040.0);                  \
        const gd_v4d t3_ = GD_V4(1.0 / 40320.0) + r_ * GD_V4(1.0 / 362880.0);              \
        const gd_v4d t4_ = GD_V4(1.0 / 3628800.0) + r_ * GD_V4(1.0 / 39916800.0);          \
        const gd_v4d t5_ = GD_V4(1.0 / 479001600.0) + r_ * GD_V4(1.0 / 6227020800.0);      \
        const gd_v4d t_ = ((t0_ + t1_ * r2_) + (t2_ + t3_ * r2_) * r4_)                    \
                          + (t4_ + t5_ * r2_) * r8_;                                       \
        const gd_v4d p_ = GD_V4(1.0) + r_ * (GD_V4(1.0) + r_ * t_);                        \
        gd_v4d n1_ = (n_ * GD_V4(0.5) + GD_SHIFT) - GD_SHIFT;  /* both parts >= -539 */    \
        (e) = p_ * GD_POW2I(n1_) * GD_POW2I(n_ - n1_);                                    \
    } while (0)

/* Logistic loss log(1 + exp(-y m)) and its derivative in m of four rows, as binary_loss in
 * _rowops.pxd (one exp of a non-positive number, so nothing overflows), with exp and log1p
 * evaluated four at a time: the scalar libm calls cost the dense logistic kernel 15% (26
 * against 22 ms on the benchmark block).
 * log1p(e) for e = exp(-|y m|) in [0, 1]: u = 1 + e, log1p(e) = log(u) + (e - (u - 1)) / u;
 * log(u) = k ln2 + log(v) with v = u / 2^k in [sqrt(1/2), sqrt(2)], and
 * log(v) = 2 atanh(s), s = (v - 1) / (v + 1), |s| < 0.172, a series in s^2 to s^21 (the
 * next term is below 3e-17 of the sum). Within a few ulp of the libm results. */
GD_CLONES static void gd_logistic4(const double *m, const double *y, double *loss,
                                   double *dloss)
{
    gd_v4d yv = gd_load_f64(y), z = -yv * gd_load_f64(m);
    gd_v4d az = (gd_v4d)((gd_v4l)z & GD_V4L_ABS);
    gd_v4d e;
    GD_EXP_NONPOS(e, -az);
    gd_v4d u = GD_V4(1.0) + e, inv_u = GD_V4(1.0) / u;
    /* k = 1 above sqrt(2): the compare's all-ones lanes masked to the bits of 1.0 */
    gd_v4d k = (gd_v4d)((u > GD_V4(0x1.6a09e667f3bcdp0)) & (gd_v4l)GD_V4(1.0));
    gd_v4d v = u - k * GD_V4(0.5) * u;
    gd_v4d s = (v - GD_V4(1.0)) / (v + GD_V4(1.0)), s2 = s * s;
    /* the series 1/3 + s2/5 + ... + s2^9/21 by Estrin's scheme (a chain of 4 instead of 9) */
    const gd_v4d s4 = s2 * s2, s8 = s4 * s4;
    const gd_v4d q0 = GD_V4(1.0 / 3.0) + s2 * GD_V4(1.0 / 5.0);
    const gd_v4d q1 = GD_V4(1.0 / 7.0) + s2 * GD_V4(1.0 / 9.0);
    const gd_v4d q2 = GD_V4(1.0 / 11.0) + s2 * GD_V4(1.0 / 13.0);
    const gd_v4d q3 = GD_V4(1.0 / 15.0) + s2 * GD_V4(1.0 / 17.0);
    const gd_v4d q4 = GD_V4(1.0 / 19.0) + s2 * GD_V4(1.0 / 21.0);
    const gd_v4d q = ((q0 + q1 * s4) + (q2 + q3 * s4) * s8) + q4 * (s8 * s8);
    gd_v4d two_s = s + s;
    gd_v4d log1p_e = (k * GD_V4(0x1.62e42fefa39efp-1)
                      + ((e - (u - GD_V4(1.0))) * inv_u + two_s * s2 * q)) + two_s;
    gd_v4d posd = (gd_v4d)((z > GD_V4(0.0)) & (gd_v4l)GD_V4(1.0));
    gd_store_f64(loss, posd * z + log1p_e);
    gd_store_f64(dloss, -yv * (e + posd * (GD_V4(1.0) - e)) * inv_u);
}
#else
static void gd_logistic4(const double *m, const double *y, double *loss, double *dloss)
{
    for (int k = 0; k < 4; k++) {
        double z = -y[k] * m[k], e = exp(-fabs(z)), pos = (double)(z > 0);
        dloss[k] = -y[k] * (e + pos * (1.0 - e)) / (1.0 + e);
        loss[k] = pos * z + log1p(e);
    }
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
/* g += a0 x0 + a1 x1, element by element as gd_axpy_dot2 adds its two updates (so that a \
 * pair of rows adds the same numbers whether or not its update shares a loop with dots) */ \
GD_CLONES static void gd_axpy2_##SUFFIX(double a0, double a1, const T *xo0, const T *xo1,   \
                                        double *g, ptrdiff_t n)                           \
{                                                                                         \
    for (ptrdiff_t j = 0; j < n; j++)                                                     \
        g[j] = (g[j] + a0 * (double)xo0[j]) + a1 * (double)xo1[j];                        \
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

/* ---- dense softmax rows ----------------------------------------------------------- */

/* Dense softmax rows go in groups of up to four rows and chunks of up to four classes: the
 * scores of two rows and a chunk in one loop (each parameter vector loaded once for both
 * rows), then the update of a chunk of G by the group's rows in one loop (each gradient
 * vector loaded and stored once for four rows instead of four times). Per (row, class) a
 * score sums in one vector of partial sums (lanes j mod 4), combined as ((0 + 2) + (1 + 3)),
 * then the n mod 4 last columns in order; G[k] += a_0k x_0 + a_1k x_1 + ... in row order. */
#if defined(__GNUC__)
#define GD_HSUM(a) (((a)[0] + (a)[2]) + ((a)[1] + (a)[3]))
#define GD_SMDOT_STEP(k, NC)                                                              \
    if ((NC) > (k)) {                                                                     \
        wk = gd_load_f64(w + (k) * n + j);                                                \
        a##k += u * wk;                                                                   \
        b##k += v * wk;                                                                   \
    }
#define GD_SMDOT_BODY(SUFFIX, NC)                                                         \
    {                                                                                     \
        gd_v4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}; \
        gd_v4d u, v, wk;                                                                  \
        double ta[4] = {0.0, 0.0, 0.0, 0.0}, tb[4] = {0.0, 0.0, 0.0, 0.0};                \
        ptrdiff_t j = 0, k;                                                               \
        for (; j + 4 <= n; j += 4) {                                                      \
            u = gd_load_##SUFFIX(x0 + j);                                                 \
            v = gd_load_##SUFFIX(x1 + j);                                                 \
            GD_SMDOT_STEP(0, NC) GD_SMDOT_STEP(1, NC)                                     \
            GD_SMDOT_STEP(2, NC) GD_SMDOT_STEP(3, NC)                                     \
        }                                                                                 \
        for (; j < n; j++)                                                                \
            for (k = 0; k < (NC); k++) {                                                  \
                ta[k] += (double)x0[j] * w[k * n + j];                                    \
                tb[k] += (double)x1[j] * w[k * n + j];                                    \
            }                                                                             \
        s0[0] = GD_HSUM(a0) + ta[0];                                                      \
        s1[0] = GD_HSUM(b0) + tb[0];                                                      \
        if ((NC) > 1) { s0[1] = GD_HSUM(a1) + ta[1]; s1[1] = GD_HSUM(b1) + tb[1]; }       \
        if ((NC) > 2) { s0[2] = GD_HSUM(a2) + ta[2]; s1[2] = GD_HSUM(b2) + tb[2]; }       \
        if ((NC) > 3) { s0[3] = GD_HSUM(a3) + ta[3]; s1[3] = GD_HSUM(b3) + tb[3]; }       \
    }
/* g_k[j..j+3] += sum over the NR rows of a_rk x_r[j..j+3], for the NC classes */
#define GD_SMAXPY_CLASS(k, NR, NC)                                                        \
    if ((NC) > (k)) {                                                                     \
        gd_v4d gk = gd_load_f64(g + (k) * n + j) + c0##k * u0;                            \
        if ((NR) > 1) gk += c1##k * u1;                                                   \
        if ((NR) > 2) gk += c2##k * u2;                                                   \
        if ((NR) > 3) gk += c3##k * u3;                                                   \
        gd_store_f64(g + (k) * n + j, gk);                                                \
    }
/* row r's coefficient of class k, broadcast (zero for the rows and classes not in use,
 * whose entries of a are never read) */
#define GD_SMAXPY_COEF(r, k, NR, NC) \
    const gd_v4d c##r##k __attribute__((unused)) =                                       \
        (NR) > (r) && (NC) > (k) ? GD_V4(a[(r) * as + (k)]) : GD_V4(0.0);
#define GD_SMAXPY_COEFS(r, NR, NC) \
    GD_SMAXPY_COEF(r, 0, NR, NC) GD_SMAXPY_COEF(r, 1, NR, NC) \
    GD_SMAXPY_COEF(r, 2, NR, NC) GD_SMAXPY_COEF(r, 3, NR, NC)
#define GD_SMAXPY_BODY(SUFFIX, NR, NC)                                                    \
    {                                                                                     \
        GD_SMAXPY_COEFS(0, NR, NC) GD_SMAXPY_COEFS(1, NR, NC)                             \
        GD_SMAXPY_COEFS(2, NR, NC) GD_SMAXPY_COEFS(3, NR, NC)                             \
        gd_v4d u0, u1 = {0}, u2 = {0}, u3 = {0};                                          \
        ptrdiff_t j = 0, k;                                                               \
        for (; j + 4 <= n; j += 4) {                                                      \
            u0 = gd_load_##SUFFIX(x0 + j);                                                \
            if ((NR) > 1) u1 = gd_load_##SUFFIX(x1 + j);                                  \
            if ((NR) > 2) u2 = gd_load_##SUFFIX(x2 + j);                                  \
            if ((NR) > 3) u3 = gd_load_##SUFFIX(x3 + j);                                  \
            GD_SMAXPY_CLASS(0, NR, NC) GD_SMAXPY_CLASS(1, NR, NC)                         \
            GD_SMAXPY_CLASS(2, NR, NC) GD_SMAXPY_CLASS(3, NR, NC)                         \
        }                                                                                 \
        for (; j < n; j++)                                                                \
            for (k = 0; k < (NC); k++) {                                                  \
                double gj = g[k * n + j] + a[k] * (double)x0[j];                          \
                if ((NR) > 1) gj += a[as + k] * (double)x1[j];                            \
                if ((NR) > 2) gj += a[2 * as + k] * (double)x2[j];                        \
                if ((NR) > 3) gj += a[3 * as + k] * (double)x3[j];                        \
                g[k * n + j] = gj;                                                        \
            }                                                                             \
    }
#define GD_SMAXPY_NC(SUFFIX, NR)                                                          \
    switch (nc) {                                                                         \
    case 4: GD_SMAXPY_BODY(SUFFIX, NR, 4) break;                                          \
    case 3: GD_SMAXPY_BODY(SUFFIX, NR, 3) break;                                          \
    case 2: GD_SMAXPY_BODY(SUFFIX, NR, 2) break;                                          \
    default: GD_SMAXPY_BODY(SUFFIX, NR, 1) break;                                         \
    }

#define GD_DENSE_SOFTMAX(SUFFIX, T)                                                       \
/* s0[k], s1[k] = the scores of rows x0, x1 for the nc <= 4 classes whose parameter rows  \
 * start at w, w + n, ... (x1 may be x0) */                                               \
GD_CLONES static void gd_smdot2_##SUFFIX(const double *w, ptrdiff_t n, ptrdiff_t nc,      \
                                         const T *x0, const T *x1, double *s0, double *s1) \
{                                                                                         \
    switch (nc) {                                                                         \
    case 4: GD_SMDOT_BODY(SUFFIX, 4) break;                                               \
    case 3: GD_SMDOT_BODY(SUFFIX, 3) break;                                               \
    case 2: GD_SMDOT_BODY(SUFFIX, 2) break;                                               \
    default: GD_SMDOT_BODY(SUFFIX, 1) break;                                              \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* G[k] += sum_r a[r as + k] x_r for the nc <= 4 classes whose gradient rows start at g,  \
 * g + n, ..., and the nr <= 4 rows x0.. (unused ones may be anything) */                 \
GD_CLONES static void gd_smaxpy_##SUFFIX(const double *a, ptrdiff_t as, ptrdiff_t nr,     \
                                         const T *x0, const T *x1, const T *x2,           \
                                         const T *x3, double *g, ptrdiff_t n,             \
                                         ptrdiff_t nc)                                    \
{                                                                                         \
    switch (nr) {                                                                         \
    case 4: GD_SMAXPY_NC(SUFFIX, 4) break;                                                \
    case 3: GD_SMAXPY_NC(SUFFIX, 3) break;                                                \
    case 2: GD_SMAXPY_NC(SUFFIX, 2) break;                                                \
    default: GD_SMAXPY_NC(SUFFIX, 1) break;                                               \
    }                                                                                     \
}
#else  /* plain C: the same sums, lane by lane */
#define GD_DENSE_SOFTMAX(SUFFIX, T)                                                       \
static void gd_smdot2_##SUFFIX(const double *w, ptrdiff_t n, ptrdiff_t nc, const T *x0,    \
                               const T *x1, double *s0, double *s1)                       \
{                                                                                         \
    for (ptrdiff_t k = 0; k < nc; k++) {                                                  \
        double a[4] = {0.0, 0.0, 0.0, 0.0}, b[4] = {0.0, 0.0, 0.0, 0.0}, ta = 0.0, tb = 0.0; \
        ptrdiff_t j = 0;                                                                  \
        for (; j + 4 <= n; j += 4)                                                        \
            for (int l = 0; l < 4; l++) {                                                 \
                a[l] += (double)x0[j + l] * w[k * n + j + l];                             \
                b[l] += (double)x1[j + l] * w[k * n + j + l];                             \
            }                                                                             \
        for (; j < n; j++) {                                                              \
            ta += (double)x0[j] * w[k * n + j];                                           \
            tb += (double)x1[j] * w[k * n + j];                                           \
        }                                                                                 \
        s0[k] = ((a[0] + a[2]) + (a[1] + a[3])) + ta;                                     \
        s1[k] = ((b[0] + b[2]) + (b[1] + b[3])) + tb;                                     \
    }                                                                                     \
}                                                                                         \
                                                                                          \
static void gd_smaxpy_##SUFFIX(const double *a, ptrdiff_t as, ptrdiff_t nr, const T *x0,   \
                               const T *x1, const T *x2, const T *x3, double *g,           \
                               ptrdiff_t n, ptrdiff_t nc)                                 \
{                                                                                         \
    const T *xs[4] = {x0, x1, x2, x3};                                                    \
    for (ptrdiff_t k = 0; k < nc; k++)                                                    \
        for (ptrdiff_t j = 0; j < n; j++) {                                               \
            double gj = g[k * n + j];                                                     \
            for (ptrdiff_t r = 0; r < nr; r++)                                            \
                gj += a[r * as + k] * (double)xs[r][j];                                   \
            g[k * n + j] = gj;                                                            \
        }                                                                                 \
}
#endif

GD_DENSE_SOFTMAX(f64, double)
GD_DENSE_SOFTMAX(f32, float)

/* ---- CSR rows --------------------------------------------------------------------- */

/* Prefetch the n bytes that follow p + ahead into L1 (a CSR row's entries, a couple of KB
 * before its dot product reads them: see _prefetch_row in linear.pyx). */
/* built-in default: CSR entries prefetched ahead of the row being read */
#define GD_CSR_AHEAD 256
GD_INLINE void gd_prefetch_stream(const void *p, ptrdiff_t n, ptrdiff_t ahead)
{
    const char *c = (const char *)p + ahead;
    for (ptrdiff_t o = 0; o < n; o += 64)
        __builtin_prefetch(c + o, 0, 3);
}

/* The dot product of a CSR row sums its terms in four partial sums, by their position in the
 * row modulo 4 (the last nnz mod 4 terms going to the first, in order), added as
 * (a0 + a1) + (a2 + a3) at the end; gd_sdot and gd_sdot_saxpy share that order, so a margin
 * does not depend on which of them computed it. Four chains of multiply-adds instead of two:
 * 4% faster on the benchmark's rows of 30 nonzeros (a standalone C loop of the least-squares
 * row loop, EPYC VM) with the loop compiled at -O2, and slower at -O3; so the two CSR row loops
 * below (gd_csr_rows, gd_csr_logistic_rows) are compiled at -O2 (GD_CSR_OPT, not in a
 * -Dkernel-debug build). The other callers of gd_sdot (hogwild.pyx, softmax CSR in linear.pyx)
 * stay at -O3 and were not measured again. */
#define GD_SDOT_TERM(k, acc)                                                              \
    {                                                                                     \
        const uint64_t c = (uint64_t)idx[k];                                              \
        if (c < (uint64_t)d) acc += (double)v[k] * w[c * stride]; else nbad++;            \
    }
#define GD_SDOT_REST                                                                      \
    for (; k + 4 <= nnz; k += 4) {                                                        \
        GD_SDOT_TERM(k, a0)                                                               \
        GD_SDOT_TERM((k) + 1, a1)                                                         \
        GD_SDOT_TERM((k) + 2, a2)                                                         \
        GD_SDOT_TERM((k) + 3, a3)                                                         \
    }                                                                                     \
    for (; k < nnz; k++)                                                                  \
        GD_SDOT_TERM(k, a0)
#if defined(__GNUC__) && !defined(__clang__) && !(defined(GDCODE_KERNEL_DEBUG) && GDCODE_KERNEL_DEBUG)
#define GD_CSR_OPT __attribute__((optimize("O2")))
#else
#define GD_CSR_OPT
#endif

#define GD_SPARSE_OPS(SUFFIX, T, I)                                                       \
/* sum_q v[q] w[idx[q] stride]; indices outside 0..d-1 are skipped and counted into bad */ \
GD_INLINE double gd_sdot_##SUFFIX(const T *v, const I *idx, ptrdiff_t nnz,                 \
                                      const double *w, ptrdiff_t stride, ptrdiff_t d,     \
                                      ptrdiff_t *bad)                                     \
{                                                                                         \
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;                                        \
    ptrdiff_t k = 0, nbad = 0;                                                            \
    GD_SDOT_REST                                                                          \
    *bad += nbad;                                                                         \
    return (a0 + a1) + (a2 + a3);                                                         \
}                                                                                         \
                                                                                          \
/* g[idx * stride] += a * v; the caller has checked the indices with gd_sdot */           \
GD_INLINE void gd_saxpy_##SUFFIX(double a, const T *v, const I *idx, ptrdiff_t nnz,        \
                                     double *g, ptrdiff_t stride)                         \
{                                                                                         \
    for (ptrdiff_t k = 0; k < nnz; k++)                                                   \
        g[(ptrdiff_t)idx[k] * stride] += a * (double)v[k];                                \
}                                                                                         \
                                                                                          \
/* gd_sdot of one row zipped with gd_saxpy(a, vo, io, no, g, stride) of an earlier row:   \
 * each step gathers four terms of the dot product and updates four entries of g, so that \
 * the loads of the new row's parameters and the read-modify-writes of the old row's     \
 * gradient (whose lines the old row's dot product left in L1) overlap. The same sums as \
 * gd_sdot and the same writes, in the same order, as gd_saxpy; about 8% faster than the  \
 * two loops one after the other (a standalone C loop over the benchmark block, on the   \
 * EPYC VM). */                                                                           \
GD_INLINE double gd_sdot_saxpy_##SUFFIX(const T *v, const I *idx, ptrdiff_t nnz,            \
                                            const double *w, ptrdiff_t stride,            \
                                            ptrdiff_t d, ptrdiff_t *bad, double a,        \
                                            const T *vo, const I *io, ptrdiff_t no,       \
                                            double *g)                                    \
{                                                                                         \
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;                                        \
    ptrdiff_t k = 0, nbad = 0, u;                                                         \
    const ptrdiff_t m = nnz < no ? nnz : no;                                              \
    for (; k + 4 <= m; k += 4) {                                                          \
        GD_SDOT_TERM(k, a0)                                                               \
        g[(ptrdiff_t)io[k] * stride] += a * (double)vo[k];                                \
        GD_SDOT_TERM(k + 1, a1)                                                           \
        g[(ptrdiff_t)io[k + 1] * stride] += a * (double)vo[k + 1];                        \
        GD_SDOT_TERM(k + 2, a2)                                                           \
        g[(ptrdiff_t)io[k + 2] * stride] += a * (double)vo[k + 2];                        \
        GD_SDOT_TERM(k + 3, a3)                                                           \
        g[(ptrdiff_t)io[k + 3] * stride] += a * (double)vo[k + 3];                        \
    }                                                                                     \
    for (u = k; u < no; u++)                                                              \
        g[(ptrdiff_t)io[u] * stride] += a * (double)vo[u];                                \
    GD_SDOT_REST                                                                          \
    *bad += nbad;                                                                         \
    return (a0 + a1) + (a2 + a3);                                                         \
}

GD_SPARSE_OPS(f64_i32, double, int32_t)
GD_SPARSE_OPS(f64_i64, double, int64_t)
GD_SPARSE_OPS(f32_i32, float, int32_t)
GD_SPARSE_OPS(f32_i64, float, int64_t)

/* The least-squares (obj 1) and hinge (obj 2) CSR row loop of linear.pyx's _csr_rows: rows
 * lo..hi-1 with nonzero coefficients, each row's dot product in one loop with the previous
 * row's update (gd_sdot_saxpy), the row's entries first prefetched `ahead` entries ahead
 * (0: none). Losses and derivatives as binary_loss in _rowops.pxd. Returns the coefficient-
 * weighted loss sum; rows with a column index outside 0..d-1 are skipped and their bad
 * indices counted into n_bad. Here rather than in Cython so that the whole loop is compiled
 * for the CPU (target_clones) with the row primitives inlined: 10.0 -> 8.7 ms on the
 * benchmark block (thread CPU time, EPYC VM), as the standalone C loop it mirrors. */
#define GD_CSR_ROWS(SUFFIX, T, I)                                                         \
GD_INLINE double gd_csr_rows_k_##SUFFIX(const int obj, const T *data, const I *indices,   \
                                        const I *indptr, ptrdiff_t lo, ptrdiff_t hi,      \
                                        const double *y, const double *coef,              \
                                        const double *w, double *g, const ptrdiff_t stride, \
                                        ptrdiff_t d, ptrdiff_t ahead, ptrdiff_t *n_bad)   \
{                                                                                         \
    double loss = 0.0, a_prev = 0.0;                                                      \
    ptrdiff_t start = 0, nnz = 0, nbad = 0;                                               \
    for (ptrdiff_t i = lo; i < hi; i++) {                                                 \
        const double c = coef[i];                                                         \
        if (c == 0.0)                                                                     \
            continue;                                                                     \
        const ptrdiff_t start_o = start, nnz_o = a_prev != 0.0 ? nnz : 0;                 \
        start = (ptrdiff_t)indptr[i];                                                     \
        nnz = (ptrdiff_t)indptr[i + 1] - start;                                           \
        const T *v = data + start;                                                        \
        const I *idx = indices + start;                                                   \
        if (ahead > 0) {                                                                  \
            gd_prefetch_stream(v, nnz * (ptrdiff_t)sizeof(T),                             \
                               ahead * (ptrdiff_t)sizeof(T));                             \
            gd_prefetch_stream(idx, nnz * (ptrdiff_t)sizeof(I),                           \
                               ahead * (ptrdiff_t)sizeof(I));                             \
        }                                                                                 \
        ptrdiff_t bad = 0;                                                                \
        const double m = gd_sdot_saxpy_##SUFFIX(v, idx, nnz, w, stride, d, &bad, a_prev,  \
                                                data + start_o, indices + start_o, nnz_o, \
                                                g);                                       \
        a_prev = 0.0;                                                                     \
        if (bad) {                                                                        \
            nbad += bad;                                                                  \
            continue;                                                                     \
        }                                                                                 \
        if (obj == 1) {                                                                   \
            const double z = m - y[i];                                                    \
            loss = loss + c * (0.5 * z * z);                                              \
            a_prev = c * z;                                                               \
        } else {                                                                          \
            const double z = 1.0 - y[i] * m, pos = (double)(z > 0);                       \
            loss = loss + c * (pos * z);                                                  \
            a_prev = c * (-y[i] * pos);                                                   \
        }                                                                                 \
    }                                                                                     \
    if (a_prev != 0.0 && nnz > 0)                                                         \
        gd_saxpy_##SUFFIX(a_prev, data + start, indices + start, nnz, g, stride);         \
    *n_bad += nbad;                                                                       \
    return loss;                                                                          \
}                                                                                         \
                                                                                          \
/* one specialised loop for each stride and objective (fewer live values per row) */      \
GD_CLONES GD_CSR_OPT static double gd_csr_rows_##SUFFIX(int obj, const T *data, const I *indices,    \
                                             const I *indptr, ptrdiff_t lo, ptrdiff_t hi, \
                                             const double *y, const double *coef,         \
                                             const double *w, double *g, ptrdiff_t stride, \
                                             ptrdiff_t d, ptrdiff_t ahead, ptrdiff_t *n_bad) \
{                                                                                         \
    if (stride == 2 && obj == 1)                                                          \
        return gd_csr_rows_k_##SUFFIX(1, data, indices, indptr, lo, hi, y, coef, w, g, 2, d, \
                                      ahead, n_bad);                                      \
    if (stride == 2)                                                                      \
        return gd_csr_rows_k_##SUFFIX(2, data, indices, indptr, lo, hi, y, coef, w, g, 2, d, \
                                      ahead, n_bad);                                      \
    if (obj == 1)                                                                         \
        return gd_csr_rows_k_##SUFFIX(1, data, indices, indptr, lo, hi, y, coef, w, g, 1, d, \
                                      ahead, n_bad);                                      \
    return gd_csr_rows_k_##SUFFIX(2, data, indices, indptr, lo, hi, y, coef, w, g, 1, d,  \
                                  ahead, n_bad);                                          \
}

/* The logistic CSR row loop of _csr_rows: rows in groups of 4 (the vector losses of
 * gd_logistic4), each row's dot product in one loop with the update of the matching row of
 * the previous group, whose lines are still in L1; an updated old row gets no entries, so
 * that a row skipped for a bad index does not leave the next one to update it again. A
 * last group of fewer than 4 rows takes the scalar losses of binary_loss (_rowops.pxd). */
#define GD_CSR_UPDATE(SUFFIX, a, start, nnz)                                              \
    if ((a) != 0.0 && (nnz) > 0) {                                                        \
        if (stride == 2)                                                                  \
            gd_saxpy_##SUFFIX(a, data + (start), indices + (start), nnz, g, 2);           \
        else                                                                              \
            gd_saxpy_##SUFFIX(a, data + (start), indices + (start), nnz, g, 1);           \
    }
#define GD_CSR_LOGISTIC_ROWS(SUFFIX, T, I)                                                \
GD_CLONES GD_CSR_OPT static double gd_csr_logistic_rows_##SUFFIX(const T *data, const I *indices,    \
        const I *indptr, ptrdiff_t lo, ptrdiff_t hi, const double *y, const double *coef,  \
        const double *w, double *g, ptrdiff_t stride, ptrdiff_t d, ptrdiff_t ahead,        \
        ptrdiff_t *n_bad)                                                                 \
{                                                                                         \
    double loss = 0.0, a_old[4], margin[4], yb[4], cb[4], l[4], dl[4];                    \
    ptrdiff_t start_old[4], nnz_old[4], start_new[4], nnz_new[4], n_old = 0, nb, b;       \
    ptrdiff_t i = lo;                                                                     \
    while (i < hi) {                                                                      \
        nb = 0;                                                                           \
        while (nb < 4 && i < hi) {                                                        \
            const double c = coef[i];                                                     \
            if (c != 0.0) {                                                               \
                const ptrdiff_t start = (ptrdiff_t)indptr[i];                             \
                const ptrdiff_t nnz = (ptrdiff_t)indptr[i + 1] - start;                   \
                const T *v = data + start;                                                \
                const I *idx = indices + start;                                           \
                ptrdiff_t bad = 0;                                                        \
                double m;                                                                 \
                if (ahead > 0 && nnz > 0) {                                               \
                    gd_prefetch_stream(v, nnz * (ptrdiff_t)sizeof(T),                     \
                                       ahead * (ptrdiff_t)sizeof(T));                     \
                    gd_prefetch_stream(idx, nnz * (ptrdiff_t)sizeof(I),                   \
                                       ahead * (ptrdiff_t)sizeof(I));                     \
                }                                                                         \
                if (nb < n_old) {                                                         \
                    const ptrdiff_t so = start_old[nb];                                   \
                    const ptrdiff_t no = a_old[nb] != 0.0 ? nnz_old[nb] : 0;              \
                    m = stride == 2                                                       \
                        ? gd_sdot_saxpy_##SUFFIX(v, idx, nnz, w, 2, d, &bad, a_old[nb],   \
                                                 data + so, indices + so, no, g)          \
                        : gd_sdot_saxpy_##SUFFIX(v, idx, nnz, w, 1, d, &bad, a_old[nb],   \
                                                 data + so, indices + so, no, g);         \
                    nnz_old[nb] = 0;                                                      \
                } else {                                                                  \
                    m = stride == 2 ? gd_sdot_##SUFFIX(v, idx, nnz, w, 2, d, &bad)        \
                                    : gd_sdot_##SUFFIX(v, idx, nnz, w, 1, d, &bad);       \
                }                                                                         \
                if (bad) {                                                                \
                    *n_bad += bad;                                                        \
                } else {                                                                  \
                    margin[nb] = m;                                                       \
                    yb[nb] = y[i];                                                        \
                    cb[nb] = c;                                                           \
                    start_new[nb] = start;                                                \
                    nnz_new[nb] = nnz;                                                    \
                    nb++;                                                                 \
                }                                                                         \
            }                                                                             \
            i++;                                                                          \
        }                                                                                 \
        for (b = nb; b < n_old; b++)                                                      \
            GD_CSR_UPDATE(SUFFIX, a_old[b], start_old[b], nnz_old[b])                     \
        if (nb == 4) {                                                                    \
            gd_logistic4(margin, yb, l, dl);                                              \
            for (b = 0; b < 4; b++) {                                                     \
                loss = loss + cb[b] * l[b];                                               \
                a_old[b] = cb[b] * dl[b];                                                 \
            }                                                                             \
        } else {                                                                          \
            for (b = 0; b < nb; b++) {                                                    \
                const double z = -yb[b] * margin[b], e = exp(-fabs(z));                   \
                const double pos = (double)(z > 0);                                       \
                loss = loss + cb[b] * (pos * z + log1p(e));                               \
                a_old[b] = cb[b] * (-yb[b] * (e + pos * (1.0 - e)) / (1.0 + e));          \
            }                                                                             \
        }                                                                                 \
        for (b = 0; b < nb; b++) {                                                        \
            start_old[b] = start_new[b];                                                  \
            nnz_old[b] = nnz_new[b];                                                      \
        }                                                                                 \
        n_old = nb;                                                                       \
    }                                                                                     \
    for (b = 0; b < n_old; b++)                                                           \
        GD_CSR_UPDATE(SUFFIX, a_old[b], start_old[b], nnz_old[b])                         \
    return loss;                                                                          \
}

GD_CSR_ROWS(f64_i32, double, int32_t)
GD_CSR_ROWS(f64_i64, double, int64_t)
GD_CSR_ROWS(f32_i32, float, int32_t)
GD_CSR_ROWS(f32_i64, float, int64_t)
GD_CSR_LOGISTIC_ROWS(f64_i32, double, int32_t)
GD_CSR_LOGISTIC_ROWS(f64_i64, double, int64_t)
GD_CSR_LOGISTIC_ROWS(f32_i32, float, int32_t)
GD_CSR_LOGISTIC_ROWS(f32_i64, float, int64_t)

/* ---- softmax rows ----------------------------------------------------------------- */

/* CSR softmax rows work on a copy of W and G laid out for them: column-major, column j's
 * block of 2 Kp doubles at wg + 2 Kp j, where Kp is the number of classes K rounded up to
 * a multiple of 4 (the padding classes have zero parameters and get zero updates); within
 * a block, classes 4c..4c+3 have W at [8c, 8c+4) and G at [8c+4, 8c+8), so that each
 * 64-byte line holds four classes' parameters and their gradient entries. A nonzero reads
 * its K parameters as Kp/4 vectors, and the update of the row finds the lines its scores
 * brought into L1. Each row's scores are computed in one loop with the previous row's
 * update (gd_kzip), as for the binary objectives. Classes go in groups of up to 16 (four
 * vectors); within a group, even and odd nonzeros sum into two sets of partial sums, so
 * that the dependency chains are half as long. The block base must be 64-byte aligned. */
#if defined(__GNUC__)
/* acc_n += vq * W vector n of the group at r, n < NV; the group's vectors are VS doubles
 * apart (8 in the interleaved copy, 4 in the copies of W alone of the two-pass loop) */
#define GD_KACC(acc, r, vq, NV, VS)                                                       \
    {                                                                                     \
        const double *r_ = (r);                                                           \
        const gd_v4d v_ = GD_V4(vq);                                                      \
        acc##0 += v_ * gd_load_f64(r_);                                                   \
        if ((NV) > 1) acc##1 += v_ * gd_load_f64(r_ + (VS));                              \
        if ((NV) > 2) acc##2 += v_ * gd_load_f64(r_ + 2 * (VS));                          \
        if ((NV) > 3) acc##3 += v_ * gd_load_f64(r_ + 3 * (VS));                          \
    }
/* G vector n of the group at r += d_n vq, n < NV, the vectors VS doubles apart */
#define GD_KUPD(r, vq, NV, VS)                                                            \
    {                                                                                     \
        double *r_ = (r);                                                                 \
        const gd_v4d v_ = GD_V4(vq);                                                      \
        gd_store_f64(r_, gd_load_f64(r_) + d0 * v_);                                      \
        if ((NV) > 1) gd_store_f64(r_ + (VS), gd_load_f64(r_ + (VS)) + d1 * v_);          \
        if ((NV) > 2) gd_store_f64(r_ + 2 * (VS), gd_load_f64(r_ + 2 * (VS)) + d2 * v_);  \
        if ((NV) > 3) gd_store_f64(r_ + 3 * (VS), gd_load_f64(r_ + 3 * (VS)) + d3 * v_);  \
    }
/* the scores of the row's nonzeros q..nnz-1 into the partial sums (even positions into a,
 * odd ones into b; column c's group at R + c ST, its vectors VS doubles apart), then
 * s + k0 = a + b: the end of both softmax CSR loops' score groups, so that they sum alike */
#define GD_KSCORE_REST(R, ST, NV, VS)                                                     \
        for (; q + 2 <= nnz; q += 2) {                                                    \
            const uint64_t c0 = (uint64_t)idx[q], c1 = (uint64_t)idx[q + 1];              \
            if (c0 < ud) GD_KACC(a, (R) + c0 * (ST), (double)v[q], NV, VS) else nbad += first; \
            if (c1 < ud) GD_KACC(b, (R) + c1 * (ST), (double)v[q + 1], NV, VS) else nbad += first; \
        }                                                                                 \
        if (q < nnz) {                                                                    \
            const uint64_t c0 = (uint64_t)idx[q];                                         \
            if (c0 < ud) GD_KACC(a, (R) + c0 * (ST), (double)v[q], NV, VS) else nbad += first; \
        }                                                                                 \
        gd_store_f64(s + k0, a0 + b0);                                                    \
        if ((NV) > 1) gd_store_f64(s + k0 + 4, a1 + b1);                                  \
        if ((NV) > 2) gd_store_f64(s + k0 + 8, a2 + b2);                                  \
        if ((NV) > 3) gd_store_f64(s + k0 + 12, a3 + b3);

/* the new row's scores of classes k0..k0+4NV-1 into s + k0, in one loop with the old row's
 * update of those classes (derivatives ao + k0); the first group counts bad indices. Each
 * term and update is written once: when a second way for rows without bad indices repeated
 * them, GCC (AVX2 everywhere, without target_clones) shared a product between the two ways
 * and did not fuse it into a multiply-add, so that this loop's gradient differed in the last
 * bit from gd_csr_softmax_passes', whose terms and updates it must equal. */
#define GD_KZIP_GROUP(NV)                                                                 \
    {                                                                                     \
        gd_v4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}; \
        gd_v4d d0 = gd_load_f64(ao + k0), d1 = d0, d2 = d0, d3 = d0;                      \
        if ((NV) > 1) d1 = gd_load_f64(ao + k0 + 4);                                      \
        if ((NV) > 2) d2 = gd_load_f64(ao + k0 + 8);                                      \
        if ((NV) > 3) d3 = gd_load_f64(ao + k0 + 12);                                     \
        double *wk = wg + 2 * k0;                                                         \
        ptrdiff_t q = 0, u;                                                               \
        for (; q + 2 <= m; q += 2) {                                                      \
            const uint64_t c0 = (uint64_t)idx[q], c1 = (uint64_t)idx[q + 1];              \
            if (c0 < ud) GD_KACC(a, wk + c0 * B, (double)v[q], NV, 8) else nbad += first; \
            GD_KUPD(wk + (ptrdiff_t)io[q] * B + 4, (double)vo[q], NV, 8)                  \
            if (c1 < ud) GD_KACC(b, wk + c1 * B, (double)v[q + 1], NV, 8) else nbad += first; \
            GD_KUPD(wk + (ptrdiff_t)io[q + 1] * B + 4, (double)vo[q + 1], NV, 8)          \
        }                                                                                 \
        for (u = q; u < no; u++)                                                          \
            GD_KUPD(wk + (ptrdiff_t)io[u] * B + 4, (double)vo[u], NV, 8)                  \
        GD_KSCORE_REST(wk, B, NV, 8)                                                      \
    }

/* Turn the K scores s into probabilities in place; return -log softmax(s)[label]. The
 * largest score is subtracted first, so that exp (GD_EXP_NONPOS, four at a time, within a
 * few ulp of libm) neither overflows nor loses the loss; the total is summed in class
 * order, and the divisions by it go four at a time. */
GD_CLONES static double gd_softmax(double *s, ptrdiff_t K, ptrdiff_t label)
{
    double smax = s[0], total = 0.0;
    const double s_label = s[label];
    ptrdiff_t k;
    for (k = 1; k < K; k++)
        if (s[k] > smax)
            smax = s[k];
    const gd_v4d mv = GD_V4(smax);
    for (k = 0; k + 4 <= K; k += 4) {
        gd_v4d e;
        GD_EXP_NONPOS(e, gd_load_f64(s + k) - mv);
        gd_store_f64(s + k, e);
    }
    if (k < K) {
        double t[4];
        for (ptrdiff_t b = 0; b < 4; b++)
            t[b] = k + b < K ? s[k + b] - smax : -1000.0;
        gd_v4d e;
        GD_EXP_NONPOS(e, gd_load_f64(t));
        gd_store_f64(t, e);
        for (ptrdiff_t b = 0; k + b < K; b++)
            s[k + b] = t[b];
    }
    for (k = 0; k < K; k++)
        total += s[k];
    const gd_v4d tv = GD_V4(total);
    for (k = 0; k + 4 <= K; k += 4)
        gd_store_f64(s + k, gd_load_f64(s + k) / tv);
    for (; k < K; k++)
        s[k] = s[k] / total;
    return smax + log(total) - s_label;
}

#define GD_KZIP(SUFFIX, T, I)                                                             \
/* s[0..Kp-1] = the scores of the row (v, idx, nnz) (column indices outside 0..d-1 skipped \
 * and counted into bad), in the loops that add the old row (vo, io, no) times the        \
 * derivatives ao[0..Kp-1] into G (its indices checked when it was the new row); always   \
 * inlined, so that it is compiled for the CPU of the gd_csr_softmax_rows clone calling   \
 * it (not inlined, it ran at the baseline's SSE2, 3.5 times slower) */                   \
GD_INLINE void gd_kzip_##SUFFIX(const T *v, const I *idx, ptrdiff_t nnz, double *wg,      \
                                ptrdiff_t Kp, ptrdiff_t d, double *s, ptrdiff_t *bad,      \
                                const double *ao, const T *vo, const I *io, ptrdiff_t no)  \
{                                                                                         \
    const ptrdiff_t B = 2 * Kp, m = nnz < no ? nnz : no;                                  \
    const uint64_t ud = (uint64_t)d;                                                      \
    ptrdiff_t nbad = 0;                                                                   \
    for (ptrdiff_t k0 = 0; k0 < Kp; k0 += 16) {                                           \
        const ptrdiff_t first = k0 == 0;                                                  \
        switch (Kp - k0 >= 16 ? 4 : (Kp - k0) / 4) {                                      \
        case 4: GD_KZIP_GROUP(4) break;                                                   \
        case 3: GD_KZIP_GROUP(3) break;                                                   \
        case 2: GD_KZIP_GROUP(2) break;                                                   \
        default: GD_KZIP_GROUP(1) break;                                                  \
        }                                                                                 \
    }                                                                                     \
    *bad += nbad;                                                                         \
}
/* Two passes instead (gd_csr_softmax_passes below): copies of W alone and of G alone,
 * column-major, column j's Kp classes at w + Kp j (classes 4c..4c+3 in the vector at 4c).
 * The scores of a row sum its nonzeros as GD_KZIP_GROUP does (the same GD_KSCORE_REST: even
 * positions into a, odd ones into b, s = a + b), and each G entry gets the same products added in the same order
 * (row by row, each row's nonzeros in order), so the two loops return the same bits. */
/* the scores of classes k0..k0+4NV-1 into s + k0; the first group counts bad indices */
#define GD_KSCORE_GROUP(NV)                                                               \
    {                                                                                     \
        gd_v4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}; \
        const double *wk = w + k0;                                                        \
        ptrdiff_t q = 0;                                                                  \
        GD_KSCORE_REST(wk, Kp, NV, 4)                                                     \
    }
/* G of classes k0..k0+4NV-1 += the row times the derivatives ao + k0 */
#define GD_KUPDATE_GROUP(NV)                                                              \
    {                                                                                     \
        gd_v4d d0 = gd_load_f64(ao + k0), d1 = d0, d2 = d0, d3 = d0;                      \
        if ((NV) > 1) d1 = gd_load_f64(ao + k0 + 4);                                      \
        if ((NV) > 2) d2 = gd_load_f64(ao + k0 + 8);                                      \
        if ((NV) > 3) d3 = gd_load_f64(ao + k0 + 12);                                     \
        double *gk = g + k0;                                                              \
        for (ptrdiff_t q = 0; q < nnz; q++)                                               \
            GD_KUPD(gk + (ptrdiff_t)idx[q] * Kp, (double)v[q], NV, 4)                     \
    }
#define GD_KGROUPS(GROUP)                                                                 \
    for (ptrdiff_t k0 = 0; k0 < Kp; k0 += 16) {                                           \
        const ptrdiff_t first = k0 == 0;                                                  \
        (void)first;                                                                      \
        switch (Kp - k0 >= 16 ? 4 : (Kp - k0) / 4) {                                      \
        case 4: GROUP(4) break;                                                           \
        case 3: GROUP(3) break;                                                           \
        case 2: GROUP(2) break;                                                           \
        default: GROUP(1) break;                                                          \
        }                                                                                 \
    }
/* gd_softmax and the derivatives of the softmax row loops for four rows at once, one row a
 * lane: a row's K scores at a + b Kp (b = 0..3, row numbers rows[b]) become its derivatives
 * coef (p_k - [k == label]), 0 for the padding classes up to Kp; returns loss plus the
 * rows' coefficient-weighted losses, added in row order. Each number goes through the
 * operations that gd_softmax gives it, so the bits are the same; the four rows' exps,
 * sums and divisions go side by side instead of one row's dependency chain at a time. */
#define GD_ROWS4(k) ((gd_v4d){a[(k)], a[Kp + (k)], a[2 * Kp + (k)], a[3 * Kp + (k)]})
#define GD_SET_ROWS4(k, x)                                                                \
    {                                                                                     \
        const gd_v4d x_ = (x);                                                            \
        a[(k)] = x_[0];                                                                   \
        a[Kp + (k)] = x_[1];                                                              \
        a[2 * Kp + (k)] = x_[2];                                                          \
        a[3 * Kp + (k)] = x_[3];                                                          \
    }
GD_INLINE double gd_softmax_rows4(double *a, ptrdiff_t Kp, ptrdiff_t K, const ptrdiff_t *rows,
                                  const double *y, const double *coef, double loss)
{
    const gd_v4d cls = {y[rows[0]], y[rows[1]], y[rows[2]], y[rows[3]]};
    const gd_v4d c = {coef[rows[0]], coef[rows[1]], coef[rows[2]], coef[rows[3]]};
    const gd_v4d s_label = {a[(ptrdiff_t)cls[0]], a[Kp + (ptrdiff_t)cls[1]],
                            a[2 * Kp + (ptrdiff_t)cls[2]], a[3 * Kp + (ptrdiff_t)cls[3]]};
    gd_v4d smax = GD_ROWS4(0), total = GD_V4(0.0), x;
    ptrdiff_t k;
    for (k = 1; k < K; k++) {
        x = GD_ROWS4(k);
        smax = GD_SELECT(x > smax, x, smax);
    }
    for (k = 0; k < K; k++) {
        GD_EXP_NONPOS(x, GD_ROWS4(k) - smax);
        total += x;
        GD_SET_ROWS4(k, x)
    }
    for (k = 0; k < K; k++) {
        x = GD_ROWS4(k) / total;
        GD_SET_ROWS4(k, c * GD_SELECT(cls == GD_V4((double)k), x - GD_V4(1.0), x))
    }
    for (; k < Kp; k++)
        GD_SET_ROWS4(k, GD_V4(0.0))
    for (int b = 0; b < 4; b++)
        loss = loss + c[b] * (smax[b] + log(total[b]) - s_label[b]);
    return loss;
}
#define GD_KPASSES(SUFFIX, T, I)                                                          \
/* s[0..Kp-1] = the scores of the row (v, idx, nnz) on the copy w of W alone (column      \
 * indices outside 0..d-1 skipped and counted into bad); inlined, as gd_kzip */           \
GD_INLINE void gd_kscores_##SUFFIX(const T *v, const I *idx, ptrdiff_t nnz,               \
                                   const double *w, ptrdiff_t Kp, ptrdiff_t d, double *s, \
                                   ptrdiff_t *bad)                                        \
{                                                                                         \
    const uint64_t ud = (uint64_t)d;                                                      \
    ptrdiff_t nbad = 0;                                                                   \
    GD_KGROUPS(GD_KSCORE_GROUP)                                                           \
    *bad += nbad;                                                                         \
}                                                                                         \
                                                                                          \
/* the copy g of G alone += the row (v, idx, nnz) times the derivatives ao[0..Kp-1] (its  \
 * indices checked by gd_kscores) */                                                      \
GD_INLINE void gd_kupdate_##SUFFIX(const double *ao, const T *v, const I *idx,            \
                                   ptrdiff_t nnz, double *g, ptrdiff_t Kp)                \
{                                                                                         \
    GD_KGROUPS(GD_KUPDATE_GROUP)                                                          \
}

#else  /* plain C: the same layout and sums, lane by lane */
#define GD_KZIP(SUFFIX, T, I)                                                             \
static void gd_kzip_##SUFFIX(const T *v, const I *idx, ptrdiff_t nnz, double *wg,          \
                             ptrdiff_t Kp, ptrdiff_t d, double *s, ptrdiff_t *bad,         \
                             const double *ao, const T *vo, const I *io, ptrdiff_t no)     \
{                                                                                         \
    const ptrdiff_t B = 2 * Kp;                                                           \
    ptrdiff_t q, k;                                                                       \
    for (q = 0; q < no; q++)                                                              \
        for (k = 0; k < Kp; k++)                                                          \
            wg[(ptrdiff_t)io[q] * B + 8 * (k / 4) + 4 + k % 4] += ao[k] * (double)vo[q];  \
    for (k = 0; k < Kp; k++) {                                                            \
        double a = 0.0, b = 0.0;                                                          \
        for (q = 0; q < nnz; q++) {                                                       \
            const uint64_t c = (uint64_t)idx[q];                                          \
            if (c >= (uint64_t)d) {                                                       \
                if (k == 0)                                                               \
                    (*bad)++;                                                             \
                continue;                                                                 \
            }                                                                             \
            if (q % 2)  /* odd positions into b, even ones into a */                     \
                b += (double)v[q] * wg[c * B + 8 * (k / 4) + k % 4];                      \
            else                                                                          \
                a += (double)v[q] * wg[c * B + 8 * (k / 4) + k % 4];                      \
        }                                                                                 \
        s[k] = a + b;                                                                     \
    }                                                                                     \
}

static double gd_softmax(double *s, ptrdiff_t K, ptrdiff_t label)
{
    double smax = s[0], total = 0.0;
    const double s_label = s[label];
    ptrdiff_t k;
    for (k = 1; k < K; k++)
        if (s[k] > smax)
            smax = s[k];
    for (k = 0; k < K; k++) {
        s[k] = exp(s[k] - smax);
        total += s[k];
    }
    for (k = 0; k < K; k++)
        s[k] = s[k] / total;
    return smax + log(total) - s_label;
}
static double gd_softmax_rows4(double *a, ptrdiff_t Kp, ptrdiff_t K, const ptrdiff_t *rows,
                               const double *y, const double *coef, double loss)
{
    for (int b = 0; b < 4; b++) {
        double *s = a + b * Kp;
        const ptrdiff_t cls = (ptrdiff_t)y[rows[b]];
        const double c = coef[rows[b]];
        ptrdiff_t k;
        loss = loss + c * gd_softmax(s, K, cls);
        for (k = 0; k < K; k++)
            s[k] = k == cls ? c * (s[k] - 1.0) : c * s[k];
        for (; k < Kp; k++)
            s[k] = 0.0;
    }
    return loss;
}
#define GD_KPASSES(SUFFIX, T, I)                                                          \
static void gd_kscores_##SUFFIX(const T *v, const I *idx, ptrdiff_t nnz, const double *w, \
                                ptrdiff_t Kp, ptrdiff_t d, double *s, ptrdiff_t *bad)     \
{                                                                                         \
    ptrdiff_t q, k;                                                                       \
    for (k = 0; k < Kp; k++) {                                                            \
        double a = 0.0, b = 0.0;                                                          \
        for (q = 0; q < nnz; q++) {                                                       \
            const uint64_t c = (uint64_t)idx[q];                                          \
            if (c >= (uint64_t)d) {                                                       \
                if (k == 0)                                                               \
                    (*bad)++;                                                             \
                continue;                                                                 \
            }                                                                             \
            if (q % 2)                                                                    \
                b += (double)v[q] * w[c * Kp + k];                                        \
            else                                                                          \
                a += (double)v[q] * w[c * Kp + k];                                        \
        }                                                                                 \
        s[k] = a + b;                                                                     \
    }                                                                                     \
}                                                                                         \
                                                                                          \
static void gd_kupdate_##SUFFIX(const double *ao, const T *v, const I *idx, ptrdiff_t nnz, \
                                double *g, ptrdiff_t Kp)                                  \
{                                                                                         \
    for (ptrdiff_t q = 0; q < nnz; q++)                                                   \
        for (ptrdiff_t k = 0; k < Kp; k++)                                                \
            g[(ptrdiff_t)idx[q] * Kp + k] += ao[k] * (double)v[q];                        \
}

#endif

/* The dense softmax loop's (linear.pyx _dense_rows) full group of four rows: their K scores
 * at s + b K become the derivatives coef[b] (p_k - [k == y[b]]); returns loss plus the rows'
 * coefficient-weighted losses (gd_softmax_rows4, compiled for the CPU it runs on). */
GD_CLONES static double gd_softmax4(double *s, ptrdiff_t K, const double *y,
                                    const double *coef, double loss)
{
    static const ptrdiff_t rows[4] = {0, 1, 2, 3};
    return gd_softmax_rows4(s, K, K, rows, y, coef, loss);
}

/* The softmax CSR row loop of linear.pyx's _csr_rows on the copy above: rows lo..hi-1 with
 * nonzero coefficients, each row's scores in one loop with the previous row's update.
 * s: scratch of 2 Kp doubles. Returns the coefficient-weighted loss sum; rows with a label
 * that is not a class number 0..K-1, or a column index outside 0..d-1, are skipped and
 * counted. */
#define GD_CSR_SOFTMAX_ROWS(SUFFIX, T, I)                                                 \
GD_KZIP(SUFFIX, T, I)                                                                     \
                                                                                          \
GD_CLONES static double gd_csr_softmax_rows_##SUFFIX(const T *data, const I *indices,     \
        const I *indptr, ptrdiff_t lo, ptrdiff_t hi, const double *y, const double *coef,  \
        double *wg, ptrdiff_t K, ptrdiff_t d, ptrdiff_t ahead, double *s,                  \
        ptrdiff_t *n_bad_index, ptrdiff_t *n_bad_label)                                   \
{                                                                                         \
    const ptrdiff_t Kp = (K + 3) / 4 * 4;                                                 \
    double *sn = s, *so = s + Kp, *t, loss = 0.0;                                         \
    ptrdiff_t start = 0, no = 0, k;                                                       \
    for (k = 0; k < Kp; k++)                                                              \
        so[k] = 0.0;                                                                      \
    for (ptrdiff_t i = lo; i < hi; i++) {                                                 \
        const double c = coef[i], label = y[i];                                           \
        if (c == 0.0)                                                                     \
            continue;                                                                     \
        if (!(label >= 0.0 && label < (double)K) || (double)(ptrdiff_t)label != label) {  \
            (*n_bad_label)++;                                                             \
            continue;                                                                     \
        }                                                                                 \
        const ptrdiff_t start_o = start;                                                  \
        start = (ptrdiff_t)indptr[i];                                                     \
        const ptrdiff_t nnz = (ptrdiff_t)indptr[i + 1] - start;                           \
        if (ahead > 0 && nnz > 0) {                                                       \
            gd_prefetch_stream(data + start, nnz * (ptrdiff_t)sizeof(T),                  \
                               ahead * (ptrdiff_t)sizeof(T));                             \
            gd_prefetch_stream(indices + start, nnz * (ptrdiff_t)sizeof(I),               \
                               ahead * (ptrdiff_t)sizeof(I));                             \
        }                                                                                 \
        ptrdiff_t bad = 0;                                                                \
        gd_kzip_##SUFFIX(data + start, indices + start, nnz, wg, Kp, d, sn, &bad, so,     \
                         data + start_o, indices + start_o, no);                          \
        no = 0;                                                                           \
        if (bad) {                                                                        \
            *n_bad_index += bad;                                                          \
            continue;                                                                     \
        }                                                                                 \
        const ptrdiff_t cls = (ptrdiff_t)label;                                           \
        loss = loss + c * gd_softmax(sn, K, cls);                                         \
        for (k = 0; k < K; k++)                                                           \
            sn[k] = k == cls ? c * (sn[k] - 1.0) : c * sn[k];                             \
        for (; k < Kp; k++)                                                               \
            sn[k] = 0.0;                                                                  \
        t = sn; sn = so; so = t;                                                          \
        no = nnz;                                                                         \
    }                                                                                     \
    if (no > 0) {                                                                         \
        ptrdiff_t bad = 0;                                                                \
        gd_kzip_##SUFFIX(data, indices, 0, wg, Kp, d, sn, &bad, so, data + start,         \
                         indices + start, no);                                            \
    }                                                                                     \
    return loss;                                                                          \
}

GD_CSR_SOFTMAX_ROWS(f64_i32, double, int32_t)
GD_CSR_SOFTMAX_ROWS(f64_i64, double, int64_t)
GD_CSR_SOFTMAX_ROWS(f32_i32, float, int32_t)
GD_CSR_SOFTMAX_ROWS(f32_i64, float, int64_t)

/* The softmax CSR row loop of linear.pyx's _csr_rows in two passes, on the copies w of W
 * alone and g of G alone (see GD_KPASSES): rows lo..hi-1 with nonzero coefficients, in
 * chunks of up to `chunk` rows; for each chunk, every row's scores, loss and derivatives
 * (into a: chunk x Kp doubles, row numbers in rows: chunk entries; the losses and
 * derivatives four rows at a time, gd_softmax_rows4), then every row's update.
 * One pass reads W's copy and the other G's, each half the size of the interleaved copy:
 * when that one outgrows the last-level cache, the halves may still fit. Returns what
 * gd_csr_softmax_rows returns, the same bits; skips and counts as it does. */
#define GD_CSR_SOFTMAX_PASSES(SUFFIX, T, I)                                               \
GD_KPASSES(SUFFIX, T, I)                                                                  \
                                                                                          \
GD_CLONES static double gd_csr_softmax_passes_##SUFFIX(const T *data, const I *indices,   \
        const I *indptr, ptrdiff_t lo, ptrdiff_t hi, const double *y, const double *coef, \
        const double *w, double *g, ptrdiff_t K, ptrdiff_t d, ptrdiff_t ahead, double *a, \
        ptrdiff_t *rows, ptrdiff_t chunk, ptrdiff_t *n_bad_index, ptrdiff_t *n_bad_label) \
{                                                                                         \
    const ptrdiff_t Kp = (K + 3) / 4 * 4;                                                 \
    double loss = 0.0;                                                                    \
    ptrdiff_t i = lo, n, m, r, k;                                                         \
    while (i < hi) {                                                                      \
        for (n = 0; i < hi && n < chunk; i++) {                                           \
            const double c = coef[i], label = y[i];                                       \
            if (c == 0.0)                                                                 \
                continue;                                                                 \
            if (!(label >= 0.0 && label < (double)K) || (double)(ptrdiff_t)label != label) { \
                (*n_bad_label)++;                                                         \
                continue;                                                                 \
            }                                                                             \
            rows[n++] = i;                                                                \
        }                                                                                 \
        for (m = r = 0; r < n; r++) {                                                     \
            const ptrdiff_t row = rows[r], start = (ptrdiff_t)indptr[row];                \
            const ptrdiff_t nnz = (ptrdiff_t)indptr[row + 1] - start;                     \
            ptrdiff_t bad = 0;                                                            \
            if (ahead > 0 && nnz > 0) {                                                   \
                gd_prefetch_stream(data + start, nnz * (ptrdiff_t)sizeof(T),              \
                                   ahead * (ptrdiff_t)sizeof(T));                         \
                gd_prefetch_stream(indices + start, nnz * (ptrdiff_t)sizeof(I),           \
                                   ahead * (ptrdiff_t)sizeof(I));                         \
            }                                                                             \
            gd_kscores_##SUFFIX(data + start, indices + start, nnz, w, Kp, d, a + m * Kp, \
                                &bad);                                                    \
            if (bad)                                                                      \
                *n_bad_index += bad;                                                      \
            else                                                                          \
                rows[m++] = row;                                                          \
        }                                                                                 \
        for (r = 0; r + 4 <= m; r += 4)                                                   \
            loss = gd_softmax_rows4(a + r * Kp, Kp, K, rows + r, y, coef, loss);          \
        for (; r < m; r++) {                                                              \
            double *s = a + r * Kp;                                                       \
            const ptrdiff_t cls = (ptrdiff_t)y[rows[r]];                                  \
            const double c = coef[rows[r]];                                               \
            loss = loss + c * gd_softmax(s, K, cls);                                      \
            for (k = 0; k < K; k++)                                                       \
                s[k] = k == cls ? c * (s[k] - 1.0) : c * s[k];                            \
            for (; k < Kp; k++)                                                           \
                s[k] = 0.0;                                                               \
        }                                                                                 \
        for (r = 0; r < m; r++) {                                                         \
            const ptrdiff_t start = (ptrdiff_t)indptr[rows[r]];                           \
            const ptrdiff_t nnz = (ptrdiff_t)indptr[rows[r] + 1] - start;                 \
            if (ahead > 0 && nnz > 0) {                                                   \
                gd_prefetch_stream(data + start, nnz * (ptrdiff_t)sizeof(T),              \
                                   ahead * (ptrdiff_t)sizeof(T));                         \
                gd_prefetch_stream(indices + start, nnz * (ptrdiff_t)sizeof(I),           \
                                   ahead * (ptrdiff_t)sizeof(I));                         \
            }                                                                             \
            gd_kupdate_##SUFFIX(a + r * Kp, data + start, indices + start, nnz, g, Kp);   \
        }                                                                                 \
    }                                                                                     \
    return loss;                                                                          \
}

GD_CSR_SOFTMAX_PASSES(f64_i32, double, int32_t)
GD_CSR_SOFTMAX_PASSES(f64_i64, double, int64_t)
GD_CSR_SOFTMAX_PASSES(f32_i32, float, int32_t)
GD_CSR_SOFTMAX_PASSES(f32_i64, float, int64_t)

#endif /* GDCODE_ROWOPS_H */
