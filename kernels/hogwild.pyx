# Lock-free parallel SGD (Hogwild, Niu, Recht, Re and Wright, NIPS 2011).
"""Hogwild: T threads run SGD on one shared parameter vector, without locks.

::

    hogwild_dense(X, y, w, objective, lr, n_steps, seed, n_threads=1, l2=0.0,
                  lr_decay=0.0, step_offset=0, n_classes=0) -> int
    hogwild_csr(data, indices, indptr, y, w, objective, lr, n_steps, seed, n_threads=1,
                l2=0.0, lr_decay=0.0, step_offset=0, n_classes=0) -> int

Each thread ``t`` of ``n_threads`` runs ``n_steps`` SGD steps on rows of the block that it
draws uniformly with replacement from its own stream (splitmix64 seeded by ``seed`` and
``t``; :func:`gdcode.kernels.reference.hogwild_rows` reproduces the draws). Step ``k`` of a
thread, on row ``i``, uses the step size ``lr / (1 + lr_decay * (step_offset + k))`` and
updates ``w`` in place with the stochastic gradient of
``f(w) = (1/n) sum_i loss_i(w) + (l2/2) ||w||^2``:

* dense rows: ``w <- (1 - eta l2) w - eta loss_i'(x_i.w) x_i`` over all of ``w``;
* CSR rows: only the coordinates in the row's support change, and coordinate ``j`` is shrunk
  by ``eta l2 n / n_j``, where ``n_j`` counts the block's rows using column ``j`` (Niu et al.'s
  split of the regulariser over the rows), so that the expected step is the full gradient.
  Columns that no row uses are left as they are.

``objective`` is ``logistic``, ``least-squares``, ``hinge`` or ``softmax``; for softmax ``w``
is the flat ``(K, n_cols)`` parameter (row-major) and ``n_classes`` gives K. Threads read
and write ``w`` without synchronisation, as Hogwild prescribes: with ``n_threads > 1`` the
result is not bit-reproducible. With one thread, or without OpenMP (``OPENMP`` False; the
thread streams then run one after another), it is. ``step_offset`` lets a caller continue a
step-size schedule across calls. Returns the number of updates applied
(``n_threads * n_steps``). A caller running Hogwild across ranks calls this on its own rows
between exchanges of ``w``.
"""

from cython.parallel cimport prange
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free

from gdcode.kernels.reference import check_hogwild_args

from _rowops cimport (
    GDCODE_HAVE_OPENMP, HINGE, LEAST_SQUARES, LOGISTIC, SOFTMAX, bad_label, binary_loss,
    default_ahead, dot, floating, index_t, ptrdiff_t, scale_axpy, sdot, softmax_scores,
)

#: True when compiled with OpenMP (threads run in parallel)
OPENMP = bool(GDCODE_HAVE_OPENMP)

OBJECTIVES = {"logistic": LOGISTIC, "least-squares": LEAST_SQUARES, "hinge": HINGE,
              "softmax": SOFTMAX}


cdef inline uint64_t _next(uint64_t *state) noexcept nogil:
    """splitmix64 (Steele, Lea and Flood 2014)."""
    cdef uint64_t z
    state[0] += <uint64_t> 0x9E3779B97F4A7C15
    z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t> 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t> 0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline ptrdiff_t _row(uint64_t *state, ptrdiff_t n) noexcept nogil:
    cdef ptrdiff_t i = <ptrdiff_t> (<double> (_next(state) >> 11)
                                    * (1.0 / 9007199254740992.0) * <double> n)
    return i if i < n else n - 1


cdef inline uint64_t _seed(uint64_t seed, ptrdiff_t thread) noexcept nogil:
    return seed ^ (<uint64_t> (thread + 1) * <uint64_t> 0xD1B54A32D192ED03)


cdef ptrdiff_t _dense_thread(int obj, const floating[:, ::1] X, const double[::1] y, double *w,
                             ptrdiff_t n_classes, uint64_t seed, ptrdiff_t thread,
                             ptrdiff_t n_steps, double lr, double l2, double lr_decay,
                             ptrdiff_t step_offset, double *s) noexcept nogil:
    """One thread's steps; returns the number of rows skipped for a bad label."""
    cdef ptrdiff_t n = X.shape[0], p = X.shape[1], step, i, k, cls, n_bad = 0
    cdef uint64_t state = _seed(seed, thread)
    cdef double eta, shrink, m, d
    cdef const floating *x
    for step in range(n_steps):
        i = _row(&state, n)
        eta = lr / (1.0 + lr_decay * <double> (step_offset + step))
        shrink = 1.0 - eta * l2
        if p == 0:
            continue
        x = &X[i, 0]
        if obj != SOFTMAX:
            m = dot(x, w, p, default_ahead(x))
            binary_loss(obj, m, y[i], &d)
            if d != 0.0 or shrink != 1.0:
                scale_axpy(shrink, -eta * d, x, w, p)
            continue
        if bad_label(y[i], n_classes):
            n_bad = n_bad + 1
            continue
        cls = <ptrdiff_t> y[i]
        for k in range(n_classes):
            s[k] = dot(x, w + k * p, p, default_ahead(x))
        softmax_scores(s, n_classes, cls)
        for k in range(n_classes):
            d = s[k] - 1.0 if k == cls else s[k]
            scale_axpy(shrink, -eta * d, x, w + k * p, p)
    return n_bad


cdef ptrdiff_t _csr_thread(int obj, const floating[::1] data, const index_t[::1] indices,
                           const index_t[::1] indptr, const double[::1] y, double *w,
                           const double *share, ptrdiff_t n_classes, ptrdiff_t p,
                           uint64_t seed, ptrdiff_t thread, ptrdiff_t n_steps, double lr,
                           double l2, double lr_decay, ptrdiff_t step_offset,
                           double *s) noexcept nogil:
    """One thread's steps; returns the number of rows skipped (bad label or column index)."""
    cdef ptrdiff_t n = indptr.shape[0] - 1, step, i, k, q, cls, start, nnz, bad, j
    cdef ptrdiff_t n_bad = 0
    cdef uint64_t state = _seed(seed, thread)
    cdef double eta, m, d
    cdef double *wk
    cdef const floating *v
    cdef const index_t *idx
    for step in range(n_steps):
        i = _row(&state, n)
        eta = lr / (1.0 + lr_decay * <double> (step_offset + step))
        start = indptr[i]
        nnz = indptr[i + 1] - start
        if nnz == 0:
            continue
        v = &data[start]
        idx = &indices[start]
        bad = 0
        if obj != SOFTMAX:
            m = sdot(v, idx, nnz, w, 1, p, &bad)
            if bad:
                n_bad = n_bad + 1
                continue
            binary_loss(obj, m, y[i], &d)
            for q in range(nnz):
                j = idx[q]
                w[j] = w[j] - eta * (d * v[q] + l2 * share[j] * w[j])
            continue
        if bad_label(y[i], n_classes):
            n_bad = n_bad + 1
            continue
        cls = <ptrdiff_t> y[i]
        for k in range(n_classes):
            s[k] = sdot(v, idx, nnz, w + k * p, 1, p, &bad)
        if bad:
            n_bad = n_bad + 1
            continue
        softmax_scores(s, n_classes, cls)
        for k in range(n_classes):
            d = s[k] - 1.0 if k == cls else s[k]
            wk = w + k * p
            for q in range(nnz):
                j = idx[q]
                wk[j] = wk[j] - eta * (d * v[q] + l2 * share[j] * wk[j])
    return n_bad


cdef class _Buffer:
    cdef double *data

    def __cinit__(self, ptrdiff_t size):
        self.data = <double *> calloc(max(size, 1), sizeof(double))
        if self.data == NULL:
            raise MemoryError(f"cannot allocate {size} doubles of Hogwild scratch")

    def __dealloc__(self):
        free(self.data)


def hogwild_dense(const floating[:, ::1] X, const double[::1] y, double[::1] w, str objective,
                  double lr, Py_ssize_t n_steps, unsigned long long seed, int n_threads=1,
                  double l2=0.0, double lr_decay=0.0, Py_ssize_t step_offset=0,
                  Py_ssize_t n_classes=0):
    """Run Hogwild SGD on dense rows, updating ``w`` in place; return the updates applied."""
    cdef int obj
    cdef ptrdiff_t n = X.shape[0], p, K, t, n_bad = 0
    p = check_hogwild_args(objective, lr, n_steps, n_threads, l2, lr_decay, step_offset, n_classes,
               w.shape[0])
    obj = OBJECTIVES[objective]
    K = n_classes if obj == SOFTMAX else 1
    if p != X.shape[1]:
        raise ValueError(f"w has {w.shape[0]} entries; {objective} on {X.shape[1]} columns "
                         f"needs {K * X.shape[1]}")
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} entries for {n} rows")
    if n == 0 or n_steps == 0:
        return 0
    cdef _Buffer scores = _Buffer(n_threads * K)
    cdef _Buffer bad = _Buffer(n_threads)
    with nogil:
        for t in prange(n_threads, num_threads=n_threads, schedule="static", chunksize=1):
            bad.data[t] = _dense_thread(obj, X, y, &w[0], K, seed, t, n_steps, lr, l2, lr_decay,
                                        step_offset, scores.data + t * K)
    for t in range(n_threads):
        n_bad += <ptrdiff_t> bad.data[t]
    if n_bad:
        raise ValueError(f"{n_bad} steps met a label that is not a class number 0..{K - 1}")
    return n_threads * n_steps


def hogwild_csr(const floating[::1] data, const index_t[::1] indices, const index_t[::1] indptr,
                const double[::1] y, double[::1] w, str objective, double lr,
                Py_ssize_t n_steps, unsigned long long seed, int n_threads=1, double l2=0.0,
                double lr_decay=0.0, Py_ssize_t step_offset=0, Py_ssize_t n_classes=0):
    """Run Hogwild SGD on CSR rows, updating ``w`` in place; return the updates applied."""
    cdef int obj
    cdef ptrdiff_t n = indptr.shape[0] - 1, p, K, t, i, q, j, n_bad = 0
    p = check_hogwild_args(objective, lr, n_steps, n_threads, l2, lr_decay, step_offset, n_classes,
               w.shape[0])
    obj = OBJECTIVES[objective]
    K = n_classes if obj == SOFTMAX else 1
    if n < 0:
        raise ValueError("indptr is empty; it needs n_rows + 1 entries")
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} entries for {n} rows")
    for i in range(n):
        if indptr[i + 1] < indptr[i]:
            raise ValueError("indptr must be non-decreasing")
    if n > 0 and (indptr[0] < 0 or indptr[n] > data.shape[0] or indptr[n] > indices.shape[0]):
        raise ValueError("indptr points outside data or indices")
    if n == 0 or n_steps == 0:
        return 0
    # share[j] = n / (rows using column j): the L2 term's per-row split
    cdef _Buffer share = _Buffer(p)
    with nogil:
        for q in range(indptr[0], indptr[n]):
            j = indices[q]
            if 0 <= j < p:
                share.data[j] += 1.0
        for j in range(p):
            if share.data[j] > 0:
                share.data[j] = n / share.data[j]
    cdef _Buffer scores = _Buffer(n_threads * K)
    cdef _Buffer bad = _Buffer(n_threads)
    with nogil:
        for t in prange(n_threads, num_threads=n_threads, schedule="static", chunksize=1):
            bad.data[t] = _csr_thread(obj, data, indices, indptr, y, &w[0], share.data, K, p,
                                      seed, t, n_steps, lr, l2, lr_decay, step_offset,
                                      scores.data + t * K)
    for t in range(n_threads):
        n_bad += <ptrdiff_t> bad.data[t]
    if n_bad:
        raise ValueError(f"{n_bad} steps met a bad label or a column index outside 0..{p - 1}")
    return n_threads * n_steps
