# The fused forward and backward pass of the multilayer perceptron (gdcode.models.MLP).
"""MLP loss and gradient sums of a block of rows, BLAS-backed, without allocation.

::

    mlp_dense(X, y, coef, w, grad, sizes, activation="relu", work=None, n_threads=1) -> float

adds ``sum_i coef_i * grad loss_i(w)`` into ``grad`` (float64, the length of ``w``) and returns
``sum_i coef_i * loss_i(w)`` for the network of layer widths ``sizes = (d_0, d_1, ..., d_L, K)``
(see ``gdcode.kernels.reference``: ``mlp_layout`` gives the parameter layout, ``W_l`` of shape
``(d_l, d_{l-1})`` row-major then ``b_l``, layer after layer). Hidden layers apply ``relu`` or
``tanh``; the output is one logistic unit (K = 1, labels +1/-1) or a softmax over K >= 2
classes (labels 0..K-1, checked before anything is added). Rows with ``coef_i == 0`` are
skipped, even when their values are not finite.

The rows go in chunks of up to R rows, R what the workspace ``work`` holds
(``reference.mlp_work_size(sizes, R, X.dtype)`` elements of X's dtype; ``work=None``
allocates one for 256 rows on this call). Per chunk, layer by layer: one GEMM (scipy's
Cython BLAS: ``dgemm`` for float64 rows, ``sgemm`` for float32) into the layer's activation
buffer, then one pass adding the bias and applying the activation; the output pass computes
the losses, the output deltas (scaled by ``coef``) and the output bias gradient together;
going back, per layer one GEMM adds the weight gradient and one GEMM forms the previous
layer's delta, whose pass multiplies by the activation's derivative (taken from the stored
activation: relu 1 where h > 0, tanh 1 - h^2) and adds the bias gradient. A chunk whose rows
all have ``coef != 0`` is read in place; otherwise its active rows are first copied into the
workspace. No buffer is allocated and the GIL is released for the whole computation.

Float64 rows accumulate the weight gradients straight into ``grad`` (GEMM with beta = 1).
Float32 rows compute in float32: ``w`` is converted once per call into a float32 copy in the
workspace, gradients accumulate in a float32 buffer there and are added into ``grad`` at the
end; losses and softmax/logistic outputs are evaluated in float64 per row.

``n_threads`` is accepted for the common kernel signature; BLAS threads are set by the caller
(``gdcode.models.MLP`` limits them to its ``n_threads`` with threadpoolctl).

numpy twin with the same signature: ``gdcode.kernels.reference.mlp_dense``.
"""

import numpy as np

from libc.math cimport exp, log, log1p, tanh
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

from gdcode.kernels import reference as _reference

ctypedef fused real:
    float
    double

cdef enum:
    MAXL = 64          # the most linear maps (reference.MLP_MAX_LAYERS)
    RELU = 0
    TANH = 1
    DEFAULT_ROWS = 256


cdef inline void _gemm(char ta, char tb, int m, int n, int k, const real *a, int lda,
                       const real *b, int ldb, real beta, real *c, int ldc) noexcept nogil:
    """C = op(A) op(B) + beta C, column-major (row-major arrays seen transposed)."""
    cdef real one = 1
    if real is float:
        sgemm(&ta, &tb, &m, &n, &k, &one, <float *>a, &lda, <float *>b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &one, <double *>a, &lda, <double *>b, &ldb, &beta, c, &ldc)


cdef inline double _log1pexp(double z) noexcept nogil:
    if z > 0:
        return z + log1p(exp(-z))
    return log1p(exp(z))


cdef inline double _sigmoid(double z) noexcept nogil:
    cdef double e
    if z >= 0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)


cdef double _run(const real[:, ::1] X, const double[::1] y, const double[::1] coef,
                 const double *w, double *grad, const Py_ssize_t *sz, Py_ssize_t nl, int act,
                 real *work, Py_ssize_t R, Py_ssize_t n_params) noexcept nogil:
    """The whole computation; ``sz[0..nl]`` the widths, ``nl`` the linear maps."""
    cdef Py_ssize_t n = X.shape[0], d0 = sz[0], K = sz[nl]
    cdef Py_ssize_t offW[MAXL]
    cdef Py_ssize_t offb[MAXL]
    cdef real *H[MAXL]          # H[l]: the output of linear map l (l = nl - 1: the scores)
    cdef Py_ssize_t l, i, j, r, c, k, m, off = 0, widest = 0, d_in, d_out, row0, lab
    cdef real *Wp
    cdef real *G
    cdef real *D1
    cdef real *D2
    cdef real *Dt
    cdef real *Xs
    cdef real *cur
    cdef const real *A0
    cdef const real *Ain
    cdef real *hb
    cdef const real *bp
    cdef real *gb
    cdef real v, zero = 0, one = 1
    cdef double loss = 0.0, s, smax, total, z, cf, dd
    cdef bint contiguous
    for l in range(nl):
        offW[l] = off
        offb[l] = off + sz[l + 1] * sz[l]
        off += (sz[l] + 1) * sz[l + 1]
        if sz[l + 1] > widest:
            widest = sz[l + 1]
    # the workspace: [float32: W copy, G accumulator] H_1..H_L, S, D1, D2, staging rows
    cur = work
    if real is float:
        Wp = cur
        for i in range(n_params):
            Wp[i] = <float>w[i]
        cur += n_params
        G = cur
        memset(G, 0, n_params * sizeof(float))
        cur += n_params
    else:
        Wp = <real *>w
        G = <real *>grad
    for l in range(nl):
        H[l] = cur
        cur += R * sz[l + 1]
    D1 = cur
    cur += R * widest
    D2 = cur
    cur += R * widest
    Xs = cur

    i = 0
    while i < n:
        while i < n and coef[i] == 0.0:
            i += 1
        if i >= n:
            break
        # the chunk: rows i..j-1 hold its m active rows
        m = 0
        j = i
        contiguous = True
        while j < n and m < R:
            if coef[j] != 0.0:
                m += 1
            else:
                contiguous = False
            j += 1
        if contiguous:
            A0 = &X[i, 0]
        else:
            r = 0
            for k in range(i, j):
                if coef[k] != 0.0:
                    memcpy(&Xs[r * d0], &X[k, 0], d0 * sizeof(real))
                    r += 1
            A0 = Xs
        # forward: H[l] = act(Ain W_l^T + b_l); the last map's bias is added in the output pass
        Ain = A0
        for l in range(nl):
            d_in, d_out = sz[l], sz[l + 1]
            _gemm(c'T', c'N', <int>d_out, <int>m, <int>d_in, Wp + offW[l], <int>d_in, Ain,
                  <int>d_in, zero, H[l], <int>d_out)
            if l < nl - 1:
                hb = H[l]
                bp = Wp + offb[l]
                if act == RELU:
                    for r in range(m):
                        for c in range(d_out):
                            v = hb[r * d_out + c] + bp[c]
                            hb[r * d_out + c] = v if v > 0 else zero
                else:
                    for r in range(m):
                        for c in range(d_out):
                            hb[r * d_out + c] = <real>tanh(hb[r * d_out + c] + bp[c])
            Ain = H[l]
        # output: losses, deltas D1 (m x K, scaled by coef) and the output bias gradient
        hb = H[nl - 1]
        bp = Wp + offb[nl - 1]
        gb = G + offb[nl - 1]
        r = 0
        for k in range(i, j):
            cf = coef[k]
            if cf == 0.0:
                continue
            row0 = r * K
            if K == 1:
                s = <double>hb[r] + <double>bp[0]
                z = -y[k] * s
                loss += cf * _log1pexp(z)
                dd = cf * (-y[k] * _sigmoid(z))
                D1[r] = <real>dd
                gb[0] += <real>dd
            else:
                lab = <Py_ssize_t>y[k]
                smax = <double>hb[row0] + <double>bp[0]
                for c in range(1, K):
                    s = <double>hb[row0 + c] + <double>bp[c]
                    if s > smax:
                        smax = s
                total = 0.0
                for c in range(K):
                    total += exp(<double>hb[row0 + c] + <double>bp[c] - smax)
                loss += cf * (smax + log(total) - (<double>hb[row0 + lab] + <double>bp[lab]))
                for c in range(K):
                    dd = exp(<double>hb[row0 + c] + <double>bp[c] - smax) / total
                    if c == lab:
                        dd -= 1.0
                    D1[row0 + c] = <real>(cf * dd)
                    gb[c] += <real>(cf * dd)
            r += 1
        # backward, map by map: G_W += D^T Ain; D_prev = (D W) * act'(H_prev), G_b += colsum
        for l in range(nl - 1, -1, -1):
            d_in, d_out = sz[l], sz[l + 1]
            if l > 0:
                Ain = H[l - 1]
            else:
                Ain = A0
            _gemm(c'N', c'T', <int>d_in, <int>d_out, <int>m, Ain, <int>d_in, D1, <int>d_out,
                  one, G + offW[l], <int>d_in)
            if l == 0:
                break
            _gemm(c'N', c'N', <int>d_in, <int>m, <int>d_out, Wp + offW[l], <int>d_in, D1,
                  <int>d_out, zero, D2, <int>d_in)
            hb = H[l - 1]
            gb = G + offb[l - 1]
            if act == RELU:
                for r in range(m):
                    for c in range(d_in):
                        v = D2[r * d_in + c] if hb[r * d_in + c] > 0 else zero
                        D2[r * d_in + c] = v
                        gb[c] += v
            else:
                for r in range(m):
                    for c in range(d_in):
                        v = D2[r * d_in + c] * (one - hb[r * d_in + c] * hb[r * d_in + c])
                        D2[r * d_in + c] = v
                        gb[c] += v
            Dt = D1
            D1 = D2
            D2 = Dt
        i = j
    if real is float:
        for i in range(n_params):
            grad[i] += <double>G[i]
    return loss


cdef Py_ssize_t _bad_labels(const double[::1] y, const double[::1] coef, Py_ssize_t K) noexcept nogil:
    cdef Py_ssize_t i, bad = 0
    cdef double v
    for i in range(y.shape[0]):
        if coef[i] == 0.0:
            continue
        v = y[i]
        if not (v >= 0 and v < K and <double>(<Py_ssize_t>v) == v):
            bad += 1
    return bad


def mlp_dense(X, y, coef, w, grad, sizes, activation="relu", work=None, n_threads=1):
    """Add the MLP gradient sum of the rows into ``grad``; return their loss sum (see the module docstring)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype not in (np.float32, np.float64) or not X.flags.c_contiguous:
        raise ValueError(f"X must be a C-contiguous float32 or float64 2-D array, got "
                         f"{X.dtype} of shape {X.shape}")
    s = _reference.mlp_check_args(X, y, coef, w, grad, sizes, activation)
    cdef const double[::1] yv = y
    cdef const double[::1] cv = coef
    cdef const double[::1] wv = w
    cdef double[::1] gv = grad
    cdef Py_ssize_t nl = len(s) - 1, K = s[len(s) - 1], l, R, bad
    cdef Py_ssize_t sz[MAXL + 1]
    for l in range(nl + 1):
        sz[l] = s[l]
    if X.shape[0] == 0:
        return 0.0
    if K > 1:
        with nogil:
            bad = _bad_labels(yv, cv, K)
        if bad:
            raise ValueError(f"{bad} labels are not class numbers 0..K-1 (K={K}); encode the "
                             "classes as 0..K-1")
    if work is None:
        R = min(X.shape[0], DEFAULT_ROWS)
        work = np.empty(_reference.mlp_work_size(s, R, X.dtype), dtype=X.dtype)
    if not (isinstance(work, np.ndarray) and work.dtype == X.dtype and work.ndim == 1
            and work.flags.c_contiguous and work.flags.writeable):
        raise ValueError(f"work must be a writable contiguous 1-D {X.dtype} array "
                         "(reference.mlp_work_size elements)")
    R = _reference.mlp_block_rows(s, work.size, X.dtype)
    if R < 1:
        raise ValueError(f"work has {work.size} elements; one row of {s} needs "
                         f"{_reference.mlp_work_size(s, 1, X.dtype)}")
    cdef int a = 0 if activation == "relu" else 1
    cdef Py_ssize_t P = wv.shape[0]
    cdef double loss
    cdef const float[:, ::1] X32
    cdef const double[:, ::1] X64
    cdef float[::1] w32
    cdef double[::1] w64
    if X.dtype == np.float32:
        X32 = X
        w32 = work
        with nogil:
            loss = _run(X32, yv, cv, &wv[0], &gv[0], sz, nl, a, &w32[0], R, P)
    else:
        X64 = X
        w64 = work
        with nogil:
            loss = _run(X64, yv, cv, &wv[0], &gv[0], sz, nl, a, &w64[0], R, P)
    return loss
