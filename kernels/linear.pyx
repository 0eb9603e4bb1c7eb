# Fused loss-and-gradient kernels for linear models on dense rows.
#
# One pass over X: for each row the margin x_i.w, the loss derivative and the
# accumulation coef_i * dloss * x_i happen while the row is still in cache.
# Outputs are preallocated by the caller; no allocation, no GIL in the loops.
# numpy twins: gdcode/kernels/reference.py (tests/test_kernels.py checks agreement).

from libc.math cimport exp, log1p

ctypedef fused floating:
    float
    double


cdef inline double _log1pexp(double z) noexcept nogil:
    """log(1 + exp(z)) without overflow."""
    if z > 0:
        return z + log1p(exp(-z))
    return log1p(exp(z))


cdef inline double _sigmoid(double z) noexcept nogil:
    cdef double e
    if z >= 0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)


cdef inline double _dot(const floating[::1] x, const double[::1] w, Py_ssize_t p) noexcept nogil:
    cdef Py_ssize_t j
    cdef double acc = 0.0
    for j in range(p):
        acc = acc + x[j] * w[j]
    return acc


def logistic_dense(const floating[:, ::1] X, const double[::1] y, const double[::1] coef,
                   const double[::1] w, double[::1] grad):
    """Add sum_i coef_i * grad log(1 + exp(-y_i x_i.w)) to `grad`; return sum_i coef_i * loss_i."""
    cdef Py_ssize_t n = X.shape[0], p = X.shape[1], i, j
    cdef double z, d, loss = 0.0
    with nogil:
        for i in range(n):
            if coef[i] == 0.0:
                continue
            z = -y[i] * _dot(X[i], w, p)
            loss = loss + coef[i] * _log1pexp(z)
            d = -coef[i] * y[i] * _sigmoid(z)
            for j in range(p):
                grad[j] = grad[j] + d * X[i, j]
    return loss


def least_squares_dense(const floating[:, ::1] X, const double[::1] y, const double[::1] coef,
                        const double[::1] w, double[::1] grad):
    """Add sum_i coef_i * (x_i.w - y_i) x_i to `grad`; return sum_i coef_i * (x_i.w - y_i)^2 / 2."""
    cdef Py_ssize_t n = X.shape[0], p = X.shape[1], i, j
    cdef double r, d, loss = 0.0
    with nogil:
        for i in range(n):
            if coef[i] == 0.0:
                continue
            r = _dot(X[i], w, p) - y[i]
            loss = loss + 0.5 * coef[i] * r * r
            d = coef[i] * r
            for j in range(p):
                grad[j] = grad[j] + d * X[i, j]
    return loss
