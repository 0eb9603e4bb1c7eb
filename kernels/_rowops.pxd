# Shared per-row pieces of the gradient kernels (cimported by linear.pyx and hogwild.pyx).
#
# The vector loops are C (rowops.h: dense dot/axpy compiled for several instruction sets,
# CSR gather/scatter with index checks); the per-row losses and their derivatives are here.

from libc.math cimport exp, fabs, log, log1p
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int32_t, int64_t, uint64_t

ctypedef fused floating:
    float
    double

ctypedef fused index_t:
    int32_t
    int64_t

cdef extern from "rowops.h" nogil:
    const ptrdiff_t GD_AHEAD_f64, GD_AHEAD_f32, GD_AHEAD2_f64, GD_AHEAD2_f32
    const ptrdiff_t GD_CSR_AHEAD
    double gd_dot_f64(const double *x, const double *w, ptrdiff_t n, ptrdiff_t ahead)
    double gd_dot_f32(const float *x, const double *w, ptrdiff_t n, ptrdiff_t ahead)
    void gd_smdot2_f64(const double *w, ptrdiff_t n, ptrdiff_t nc, const double *x0,
                       const double *x1, double *s0, double *s1)
    void gd_smdot2_f32(const double *w, ptrdiff_t n, ptrdiff_t nc, const float *x0,
                       const float *x1, double *s0, double *s1)
    void gd_smaxpy_f64(const double *a, ptrdiff_t a_stride, ptrdiff_t nr, const double *x0,
                       const double *x1, const double *x2, const double *x3, double *g,
                       ptrdiff_t n, ptrdiff_t nc)
    void gd_smaxpy_f32(const double *a, ptrdiff_t a_stride, ptrdiff_t nr, const float *x0,
                       const float *x1, const float *x2, const float *x3, double *g,
                       ptrdiff_t n, ptrdiff_t nc)
    double gd_axpy_dot_f64(double a, const double *xo, double *g, const double *x,
                           const double *w, ptrdiff_t n, ptrdiff_t ahead)
    double gd_axpy_dot_f32(double a, const float *xo, double *g, const float *x,
                           const double *w, ptrdiff_t n, ptrdiff_t ahead)
    void gd_prefetch_stream(const void *p, ptrdiff_t n, ptrdiff_t ahead)
    void gd_logistic4(const double *m, const double *y, double *loss, double *dloss)
    void gd_axpy_dot2_f64(double a0, double a1, const double *xo0, const double *xo1,
                          double *g, const double *x0, const double *x1, const double *w,
                          ptrdiff_t n, double *out, ptrdiff_t ahead)
    void gd_axpy_dot2_f32(double a0, double a1, const float *xo0, const float *xo1,
                          double *g, const float *x0, const float *x1, const double *w,
                          ptrdiff_t n, double *out, ptrdiff_t ahead)
    void gd_axpy_f64(double a, const double *x, double *g, ptrdiff_t n)
    void gd_axpy2_f64(double a0, double a1, const double *xo0, const double *xo1, double *g,
                      ptrdiff_t n)
    void gd_axpy2_f32(double a0, double a1, const float *xo0, const float *xo1, double *g,
                      ptrdiff_t n)
    void gd_axpy_f32(double a, const float *x, double *g, ptrdiff_t n)
    void gd_scale_axpy_f64(double s, double a, const double *x, double *w, ptrdiff_t n)
    void gd_scale_axpy_f32(double s, double a, const float *x, double *w, ptrdiff_t n)
    double gd_sdot_f64_i32(const double *v, const int32_t *idx, ptrdiff_t nnz, const double *w,
                           ptrdiff_t stride, ptrdiff_t d, ptrdiff_t *bad)
    double gd_sdot_f64_i64(const double *v, const int64_t *idx, ptrdiff_t nnz, const double *w,
                           ptrdiff_t stride, ptrdiff_t d, ptrdiff_t *bad)
    double gd_sdot_f32_i32(const float *v, const int32_t *idx, ptrdiff_t nnz, const double *w,
                           ptrdiff_t stride, ptrdiff_t d, ptrdiff_t *bad)
    double gd_sdot_f32_i64(const float *v, const int64_t *idx, ptrdiff_t nnz, const double *w,
                           ptrdiff_t stride, ptrdiff_t d, ptrdiff_t *bad)
    double gd_csr_rows_f64_i32(int obj, const double *data, const int32_t *indices, const int32_t *indptr,
                             ptrdiff_t lo, ptrdiff_t hi, const double *y, const double *coef,
                             const double *w, double *g, ptrdiff_t stride, ptrdiff_t d,
                             ptrdiff_t ahead, ptrdiff_t *n_bad)
    double gd_csr_rows_f64_i64(int obj, const double *data, const int64_t *indices, const int64_t *indptr,
                             ptrdiff_t lo, ptrdiff_t hi, const double *y, const double *coef,
                             const double *w, double *g, ptrdiff_t stride, ptrdiff_t d,
                             ptrdiff_t ahead, ptrdiff_t *n_bad)
    double gd_csr_rows_f32_i32(int obj, const float *data, const int32_t *indices, const int32_t *indptr,
                             ptrdiff_t lo, ptrdiff_t hi, const double *y, const double *coef,
                             const double *w, double *g, ptrdiff_t stride, ptrdiff_t d,
                             ptrdiff_t ahead, ptrdiff_t *n_bad)
    double gd_csr_rows_f32_i64(int obj, const float *data, const int64_t *indices, const int64_t *indptr,
                             ptrdiff_t lo, ptrdiff_t hi, const double *y, const double *coef,
                             const double *w, double *g, ptrdiff_t stride, ptrdiff_t d,
                             ptrdiff_t ahead, ptrdiff_t *n_bad)
    double gd_csr_logistic_rows_f64_i32(const double *data, const int32_t *indices, const int32_t *indptr,
                                      ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                      const double *coef, const double *w, double *g,
                                      ptrdiff_t stride, ptrdiff_t d, ptrdiff_t ahead,
                                      ptrdiff_t *n_bad)
    double gd_csr_logistic_rows_f64_i64(const double *data, const int64_t *indices, const int64_t *indptr,
                                      ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                      const double *coef, const double *w, double *g,
                                      ptrdiff_t stride, ptrdiff_t d, ptrdiff_t ahead,
                                      ptrdiff_t *n_bad)
    double gd_csr_logistic_rows_f32_i32(const float *data, const int32_t *indices, const int32_t *indptr,
                                      ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                      const double *coef, const double *w, double *g,
                                      ptrdiff_t stride, ptrdiff_t d, ptrdiff_t ahead,
                                      ptrdiff_t *n_bad)
    double gd_csr_logistic_rows_f32_i64(const float *data, const int64_t *indices, const int64_t *indptr,
                                      ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                      const double *coef, const double *w, double *g,
                                      ptrdiff_t stride, ptrdiff_t d, ptrdiff_t ahead,
                                      ptrdiff_t *n_bad)
    void gd_saxpy_f64_i32(double a, const double *v, const int32_t *idx, ptrdiff_t nnz, double *g,
                          ptrdiff_t stride)
    void gd_saxpy_f64_i64(double a, const double *v, const int64_t *idx, ptrdiff_t nnz, double *g,
                          ptrdiff_t stride)
    void gd_saxpy_f32_i32(double a, const float *v, const int32_t *idx, ptrdiff_t nnz, double *g,
                          ptrdiff_t stride)
    void gd_saxpy_f32_i64(double a, const float *v, const int64_t *idx, ptrdiff_t nnz, double *g,
                          ptrdiff_t stride)
    double gd_csr_softmax_rows_f64_i32(const double *data, const int32_t *indices, const int32_t *indptr,
                                     ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                     const double *coef, double *wg, ptrdiff_t K, ptrdiff_t d,
                                     ptrdiff_t ahead, double *s, ptrdiff_t *n_bad_index,
                                     ptrdiff_t *n_bad_label)
    double gd_csr_softmax_rows_f64_i64(const double *data, const int64_t *indices, const int64_t *indptr,
                                     ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                     const double *coef, double *wg, ptrdiff_t K, ptrdiff_t d,
                                     ptrdiff_t ahead, double *s, ptrdiff_t *n_bad_index,
                                     ptrdiff_t *n_bad_label)
    double gd_csr_softmax_rows_f32_i32(const float *data, const int32_t *indices, const int32_t *indptr,
                                     ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                     const double *coef, double *wg, ptrdiff_t K, ptrdiff_t d,
                                     ptrdiff_t ahead, double *s, ptrdiff_t *n_bad_index,
                                     ptrdiff_t *n_bad_label)
    double gd_csr_softmax_rows_f32_i64(const float *data, const int64_t *indices, const int64_t *indptr,
                                     ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                     const double *coef, double *wg, ptrdiff_t K, ptrdiff_t d,
                                     ptrdiff_t ahead, double *s, ptrdiff_t *n_bad_index,
                                     ptrdiff_t *n_bad_label)
    double gd_csr_softmax_passes_f64_i32(const double *data, const int32_t *indices, const int32_t *indptr,
                                       ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                       const double *coef, const double *w, double *g,
                                       ptrdiff_t K, ptrdiff_t d, ptrdiff_t ahead, double *a,
                                       ptrdiff_t *rows, ptrdiff_t chunk, ptrdiff_t *n_bad_index,
                                       ptrdiff_t *n_bad_label)
    double gd_csr_softmax_passes_f64_i64(const double *data, const int64_t *indices, const int64_t *indptr,
                                       ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                       const double *coef, const double *w, double *g,
                                       ptrdiff_t K, ptrdiff_t d, ptrdiff_t ahead, double *a,
                                       ptrdiff_t *rows, ptrdiff_t chunk, ptrdiff_t *n_bad_index,
                                       ptrdiff_t *n_bad_label)
    double gd_csr_softmax_passes_f32_i32(const float *data, const int32_t *indices, const int32_t *indptr,
                                       ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                       const double *coef, const double *w, double *g,
                                       ptrdiff_t K, ptrdiff_t d, ptrdiff_t ahead, double *a,
                                       ptrdiff_t *rows, ptrdiff_t chunk, ptrdiff_t *n_bad_index,
                                       ptrdiff_t *n_bad_label)
    double gd_csr_softmax_passes_f32_i64(const float *data, const int64_t *indices, const int64_t *indptr,
                                       ptrdiff_t lo, ptrdiff_t hi, const double *y,
                                       const double *coef, const double *w, double *g,
                                       ptrdiff_t K, ptrdiff_t d, ptrdiff_t ahead, double *a,
                                       ptrdiff_t *rows, ptrdiff_t chunk, ptrdiff_t *n_bad_index,
                                       ptrdiff_t *n_bad_label)
    double gd_softmax(double *s, ptrdiff_t K, ptrdiff_t label)
    double gd_softmax4(double *s, ptrdiff_t K, const double *y, const double *coef, double loss)

cdef extern from *:
    """
    #ifdef _OPENMP
    #define GDCODE_HAVE_OPENMP 1
    #else
    #define GDCODE_HAVE_OPENMP 0
    #endif
    #ifndef GDCODE_KERNEL_DEBUG
    #define GDCODE_KERNEL_DEBUG 0
    #endif
    """
    const int GDCODE_HAVE_OPENMP
    const int GDCODE_KERNEL_DEBUG

# objective codes
cdef enum:
    LOGISTIC = 0
    LEAST_SQUARES = 1
    HINGE = 2
    SOFTMAX = 3


# ``ahead``: bytes of the row stream prefetched ahead of the loop (0: none); only speed
# depends on it, never the result.

cdef inline double dot(const floating *x, const double *w, ptrdiff_t n,
                       ptrdiff_t ahead) noexcept nogil:
    if floating is double:
        return gd_dot_f64(x, w, n, ahead)
    else:
        return gd_dot_f32(x, w, n, ahead)


cdef inline double axpy_dot(double a, const floating *xo, double *g, const floating *x,
                            const double *w, ptrdiff_t n, ptrdiff_t ahead) noexcept nogil:
    """``g += a xo``, returning ``dot(x, w)``: the update of the previous row in the loop
    that reads the next one."""
    if floating is double:
        return gd_axpy_dot_f64(a, xo, g, x, w, n, ahead)
    else:
        return gd_axpy_dot_f32(a, xo, g, x, w, n, ahead)


cdef inline void axpy_dot2(double a0, double a1, const floating *xo0, const floating *xo1,
                           double *g, const floating *x0, const floating *x1, const double *w,
                           ptrdiff_t n, double *out, ptrdiff_t ahead) noexcept nogil:
    """``out[k] = dot(xk, w)`` for k = 0, 1, and ``g += a0 xo0 + a1 xo1``, in one loop."""
    if floating is double:
        gd_axpy_dot2_f64(a0, a1, xo0, xo1, g, x0, x1, w, n, out, ahead)
    else:
        gd_axpy_dot2_f32(a0, a1, xo0, xo1, g, x0, x1, w, n, out, ahead)


cdef inline ptrdiff_t default_ahead(const floating *x) noexcept nogil:
    """The built-in prefetch distance of one-row loops (rowops.h) for this dtype."""
    if floating is double:
        return GD_AHEAD_f64
    else:
        return GD_AHEAD_f32


cdef inline void smdot2(const double *w, ptrdiff_t n, ptrdiff_t nc, const floating *x0,
                        const floating *x1, double *s0, double *s1) noexcept nogil:
    """Scores of rows ``x0`` and ``x1`` (which may be ``x0``) for the ``nc <= 4`` classes
    whose parameter rows are ``w[0:n], w[n:2n], ...`` (rowops.h)."""
    if floating is double:
        gd_smdot2_f64(w, n, nc, x0, x1, s0, s1)
    else:
        gd_smdot2_f32(w, n, nc, x0, x1, s0, s1)


cdef inline void smaxpy(const double *a, ptrdiff_t a_stride, ptrdiff_t nr,
                        const floating **x, double *g, ptrdiff_t n,
                        ptrdiff_t nc) noexcept nogil:
    """``g[k n:(k+1) n] += sum_r a[r a_stride + k] x[r]`` for the ``nc <= 4`` classes and the
    ``nr <= 4`` rows ``x[0..nr-1]``, in row order."""
    if floating is double:
        gd_smaxpy_f64(a, a_stride, nr, x[0], x[1], x[2], x[3], g, n, nc)
    else:
        gd_smaxpy_f32(a, a_stride, nr, x[0], x[1], x[2], x[3], g, n, nc)


cdef inline void axpy2(double a0, double a1, const floating *xo0, const floating *xo1,
                       double *g, ptrdiff_t n) noexcept nogil:
    """``g += a0 xo0 + a1 xo1``, adding the same numbers as the update of axpy_dot2."""
    if floating is double:
        gd_axpy2_f64(a0, a1, xo0, xo1, g, n)
    else:
        gd_axpy2_f32(a0, a1, xo0, xo1, g, n)


cdef inline void axpy(double a, const floating *x, double *g, ptrdiff_t n) noexcept nogil:
    if floating is double:
        gd_axpy_f64(a, x, g, n)
    else:
        gd_axpy_f32(a, x, g, n)


cdef inline void scale_axpy(double s, double a, const floating *x, double *w,
                            ptrdiff_t n) noexcept nogil:
    if floating is double:
        gd_scale_axpy_f64(s, a, x, w, n)
    else:
        gd_scale_axpy_f32(s, a, x, w, n)


cdef inline double sdot(const floating *v, const index_t *idx, ptrdiff_t nnz, const double *w,
                        ptrdiff_t stride, ptrdiff_t d, ptrdiff_t *bad) noexcept nogil:
    """``sum_q v[q] w[idx[q] stride]``; indices outside 0..d-1 are counted into ``bad``."""
    if floating is double:
        if index_t is int32_t:
            return gd_sdot_f64_i32(v, idx, nnz, w, stride, d, bad)
        else:
            return gd_sdot_f64_i64(v, idx, nnz, w, stride, d, bad)
    else:
        if index_t is int32_t:
            return gd_sdot_f32_i32(v, idx, nnz, w, stride, d, bad)
        else:
            return gd_sdot_f32_i64(v, idx, nnz, w, stride, d, bad)


cdef inline double csr_rows(int obj, const floating *data, const index_t *indices,
                            const index_t *indptr, ptrdiff_t lo, ptrdiff_t hi, const double *y,
                            const double *coef, const double *w, double *g, ptrdiff_t stride,
                            ptrdiff_t d, ptrdiff_t ahead, ptrdiff_t *n_bad) noexcept nogil:
    """The least-squares and hinge CSR row loop (rowops.h gd_csr_rows)."""
    if floating is double:
        if index_t is int32_t:
            return gd_csr_rows_f64_i32(obj, data, indices, indptr, lo, hi, y, coef, w, g,
                                       stride, d, ahead, n_bad)
        else:
            return gd_csr_rows_f64_i64(obj, data, indices, indptr, lo, hi, y, coef, w, g,
                                       stride, d, ahead, n_bad)
    else:
        if index_t is int32_t:
            return gd_csr_rows_f32_i32(obj, data, indices, indptr, lo, hi, y, coef, w, g,
                                       stride, d, ahead, n_bad)
        else:
            return gd_csr_rows_f32_i64(obj, data, indices, indptr, lo, hi, y, coef, w, g,
                                       stride, d, ahead, n_bad)


cdef inline double csr_logistic_rows(const floating *data, const index_t *indices,
                                     const index_t *indptr, ptrdiff_t lo, ptrdiff_t hi,
                                     const double *y, const double *coef, const double *w,
                                     double *g, ptrdiff_t stride, ptrdiff_t d, ptrdiff_t ahead,
                                     ptrdiff_t *n_bad) noexcept nogil:
    """The logistic CSR row loop (rowops.h gd_csr_logistic_rows)."""
    if floating is double:
        if index_t is int32_t:
            return gd_csr_logistic_rows_f64_i32(data, indices, indptr, lo, hi, y, coef, w, g,
                                                stride, d, ahead, n_bad)
        else:
            return gd_csr_logistic_rows_f64_i64(data, indices, indptr, lo, hi, y, coef, w, g,
                                                stride, d, ahead, n_bad)
    else:
        if index_t is int32_t:
            return gd_csr_logistic_rows_f32_i32(data, indices, indptr, lo, hi, y, coef, w, g,
                                                stride, d, ahead, n_bad)
        else:
            return gd_csr_logistic_rows_f32_i64(data, indices, indptr, lo, hi, y, coef, w, g,
                                                stride, d, ahead, n_bad)


cdef inline void saxpy(double a, const floating *v, const index_t *idx, ptrdiff_t nnz,
                       double *g, ptrdiff_t stride) noexcept nogil:
    """``g[idx[q] stride] += a v[q]``."""
    if floating is double:
        if index_t is int32_t:
            gd_saxpy_f64_i32(a, v, idx, nnz, g, stride)
        else:
            gd_saxpy_f64_i64(a, v, idx, nnz, g, stride)
    else:
        if index_t is int32_t:
            gd_saxpy_f32_i32(a, v, idx, nnz, g, stride)
        else:
            gd_saxpy_f32_i64(a, v, idx, nnz, g, stride)


cdef inline double csr_softmax_rows(const floating *data, const index_t *indices,
                                    const index_t *indptr, ptrdiff_t lo, ptrdiff_t hi,
                                    const double *y, const double *coef, double *wg,
                                    ptrdiff_t K, ptrdiff_t d, ptrdiff_t ahead, double *s,
                                    ptrdiff_t *n_bad_index, ptrdiff_t *n_bad_label) noexcept nogil:
    """The softmax CSR row loop on the interleaved column-major copy (rowops.h
    gd_csr_softmax_rows); ``s`` is scratch of 2 Kp doubles."""
    if floating is double:
        if index_t is int32_t:
            return gd_csr_softmax_rows_f64_i32(data, indices, indptr, lo, hi, y, coef, wg, K, d,
                                               ahead, s, n_bad_index, n_bad_label)
        else:
            return gd_csr_softmax_rows_f64_i64(data, indices, indptr, lo, hi, y, coef, wg, K, d,
                                               ahead, s, n_bad_index, n_bad_label)
    else:
        if index_t is int32_t:
            return gd_csr_softmax_rows_f32_i32(data, indices, indptr, lo, hi, y, coef, wg, K, d,
                                               ahead, s, n_bad_index, n_bad_label)
        else:
            return gd_csr_softmax_rows_f32_i64(data, indices, indptr, lo, hi, y, coef, wg, K, d,
                                               ahead, s, n_bad_index, n_bad_label)


cdef inline double csr_softmax_passes(const floating *data, const index_t *indices,
                                      const index_t *indptr, ptrdiff_t lo, ptrdiff_t hi,
                                      const double *y, const double *coef, const double *w,
                                      double *g, ptrdiff_t K, ptrdiff_t d, ptrdiff_t ahead,
                                      double *a, ptrdiff_t *rows, ptrdiff_t chunk,
                                      ptrdiff_t *n_bad_index, ptrdiff_t *n_bad_label) noexcept nogil:
    """The softmax CSR row loop in two passes over chunks of rows, on copies of W alone and
    of G alone (rowops.h gd_csr_softmax_passes); ``a`` is scratch of ``chunk`` Kp doubles,
    ``rows`` of ``chunk`` row numbers. The same results as :func:`csr_softmax_rows`."""
    if floating is double:
        if index_t is int32_t:
            return gd_csr_softmax_passes_f64_i32(data, indices, indptr, lo, hi, y, coef, w, g, K,
                                                 d, ahead, a, rows, chunk, n_bad_index,
                                                 n_bad_label)
        else:
            return gd_csr_softmax_passes_f64_i64(data, indices, indptr, lo, hi, y, coef, w, g, K,
                                                 d, ahead, a, rows, chunk, n_bad_index,
                                                 n_bad_label)
    else:
        if index_t is int32_t:
            return gd_csr_softmax_passes_f32_i32(data, indices, indptr, lo, hi, y, coef, w, g, K,
                                                 d, ahead, a, rows, chunk, n_bad_index,
                                                 n_bad_label)
        else:
            return gd_csr_softmax_passes_f32_i64(data, indices, indptr, lo, hi, y, coef, w, g, K,
                                                 d, ahead, a, rows, chunk, n_bad_index,
                                                 n_bad_label)


cdef inline double binary_loss(int obj, double m, double y, double *dloss) noexcept nogil:
    """Loss of one row at margin ``m = x.w``; ``dloss[0]`` gets d loss / d m.

    logistic: log(1 + exp(-y m)) with one exp of a non-positive number, so no overflow;
    least-squares: (m - y)^2 / 2; hinge: max(0, 1 - y m), subgradient 0 at the kink.
    Branch-free where the branch would depend on the data (the sign of a margin is a coin
    flip on real data, and a mispredicted branch also throws away the loads of the next
    row that the CPU had started).
    """
    cdef double z, e, pos
    if obj == LOGISTIC:
        z = -y * m
        e = exp(-fabs(z))
        pos = <double> (z > 0)
        # sigmoid(z) = 1 / (1 + e) for z > 0 and e / (1 + e) otherwise
        dloss[0] = -y * (e + pos * (1.0 - e)) / (1.0 + e)
        return pos * z + log1p(e)
    if obj == LEAST_SQUARES:
        z = m - y
        dloss[0] = z
        return 0.5 * z * z
    z = 1.0 - y * m
    pos = <double> (z > 0)
    dloss[0] = -y * pos
    return pos * z


cdef inline double binary_losses(int obj, const double *m, const double *y, const double *c,
                                 ptrdiff_t nb, double *a) noexcept nogil:
    """``sum_b c[b] loss(m[b], y[b])`` over ``nb <= 4`` rows; ``a[b]`` gets ``c[b]`` times
    the derivative in ``m[b]``. Four logistic rows go through one ``gd_logistic4`` (exp and
    log1p four at a time); everything else through :func:`binary_loss`."""
    cdef double loss = 0.0, d
    cdef double l[4]
    cdef ptrdiff_t b
    if obj == LOGISTIC and nb == 4:
        gd_logistic4(m, y, l, a)
        for b in range(4):
            loss = loss + c[b] * l[b]
            a[b] = c[b] * a[b]
        return loss
    for b in range(nb):
        loss = loss + c[b] * binary_loss(obj, m[b], y[b], &d)
        a[b] = c[b] * d
    return loss


cdef inline bint bad_label(double label, ptrdiff_t n_classes) noexcept nogil:
    """True unless ``label`` is one of 0, 1, ..., n_classes - 1 (NaN is bad)."""
    if not (label >= 0.0 and label < n_classes):
        return True
    return <double> (<ptrdiff_t> label) != label


cdef inline double softmax_scores(double *s, ptrdiff_t n_classes, ptrdiff_t label) noexcept nogil:
    """Turn scores ``s`` into probabilities in place; return ``-log softmax(s)[label]``.

    The maximum is subtracted before exp (four at a time, rowops.h gd_softmax: within a few
    ulp of libm), so large scores neither overflow nor lose the loss.
    """
    return gd_softmax(s, n_classes, label)


cdef inline double softmax_derivatives4(double *s, ptrdiff_t n_classes, const double *y,
                                        const double *coef, double loss) noexcept nogil:
    """Four rows' scores ``s[b n_classes:(b+1) n_classes]`` into their derivatives
    ``coef[b] (p_k - [k == y[b]])``; return ``loss`` plus ``coef[b]`` times each row's loss, in
    row order (rowops.h gd_softmax4: the four rows' exps side by side, one a vector lane)."""
    return gd_softmax4(s, n_classes, y, coef, loss)
