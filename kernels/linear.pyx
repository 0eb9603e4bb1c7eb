# Fused loss-and-gradient kernels of the linear models (docs/objectives.md), dense and CSR.
"""Loss and gradient sums of a block of rows, one pass over the rows.

For a block of rows ``X`` with labels ``y`` and per-row coefficients ``coef`` (a coded
worker's encoding coefficients, or ones), each kernel adds
``sum_i coef_i * grad loss_i(w)`` into the caller's ``grad`` and returns
``sum_i coef_i * loss_i(w)``. Rows with ``coef_i == 0`` are skipped. The row's margin
``x_i.w``, its loss derivative and the accumulation into ``grad`` happen while the row is
still in cache, so ``X`` is read from memory once; nothing is allocated per row and the
loops run without the GIL.

Kernels (``*_dense``: ``X`` C-contiguous float64 or float32; ``*_csr``: ``data`` float64 or
float32, ``indices``/``indptr`` int32 or int64, as scipy stores them; ``indptr`` may start
anywhere, so a row slice of a larger matrix needs no copy)::

    logistic_dense(X, y, coef, w, grad, n_threads=1)           log(1 + exp(-y x.w))
    least_squares_dense(X, y, coef, w, grad, n_threads=1)      (x.w - y)^2 / 2
    hinge_dense(X, y, coef, w, grad, n_threads=1)              max(0, 1 - y x.w)
    softmax_dense(X, y, coef, W, G, n_threads=1)               -log softmax(W x)[y]
    logistic_csr(data, indices, indptr, y, coef, w, grad, n_threads=1)   ... and so on

Binary objectives take ``w`` and ``grad`` of length ``n_cols``; softmax takes ``W`` and
``G`` of shape ``(K, n_cols)`` (the flat parameter vector reshaped, row-major) and labels
``0..K-1`` as float64. Hinge uses the subgradient ``-y x`` where ``1 - y x.w > 0`` and 0
elsewhere, including at the kink. Large margins are safe: logistic evaluates one ``exp`` of a
non-positive number, softmax subtracts the largest score before ``exp``.

``n_threads > 1`` splits the rows into that many contiguous chunks run by OpenMP threads;
chunk 0 accumulates into ``grad``, the others into zeroed scratch gradients allocated once
per call and added into ``grad`` in chunk order (so the result depends on ``n_threads`` only
through summation order). When the module is built without OpenMP (``OPENMP`` is False),
``n_threads`` is accepted and ignored.

How (measured on the blocks of ``gdcode bench kernels``): dense rows go through a software
pipeline over groups of 8 rows, the dot products of two new rows running in the same vector
loop as the updates by two rows of the previous group (rowops.h, compiled for SSE2, AVX2 and
AVX-512 and chosen at load time), each row stream prefetched into L2 ahead of the loop, with
the group's losses computed together and without data-dependent branches (logistic rows four
at a time in one vector exp and log1p); dense softmax rows go in groups of 4 and classes in
chunks of 4. CSR rows go one at a time (logistic rows in groups of 4), in row loops written in
C (rowops.h gd_csr_rows and its siblings), each row's entries prefetched into L1 ahead, its
dot product (or its K scores) gathered in one loop with the previous row's update, each
column index checked. A CSR block with enough nonzeros for its columns works on a copy laid
out for it: ``w`` and ``grad`` interleaved (binary objectives), or ``W`` and ``G`` column-major
and interleaved by four classes (softmax), so that an update hits the lines its row's dot
product gathered. Softmax rows whose interleaved copy would crowd the last-level cache go in
two passes over chunks of rows instead, the scores on a copy of ``W`` alone and the updates on
one of ``G`` alone (half the size each), with the same results.

Machine-dependent parameters (prefetch distances; the size of copy from which softmax CSR rows
go in two passes) are set at run time (:func:`set_tuning`), from this machine's calibration
when one is cached (``gdcode.kernels.tuning``); they change the speed, never the results.

Errors: shapes that disagree, a CSR ``indptr`` that decreases or overruns ``data``, a column
index outside ``0..n_cols-1`` and (softmax) a label outside ``0..K-1`` raise ValueError; after
an index or label error ``grad`` holds a partial sum.

numpy twins with the same signatures: ``gdcode.kernels.reference``.
"""

from cython.parallel cimport prange
from libc.stdlib cimport calloc, free

from _rowops cimport (
    GD_AHEAD2_f32, GD_AHEAD2_f64, GD_CSR_AHEAD, GDCODE_HAVE_OPENMP, GDCODE_KERNEL_DEBUG, HINGE,
    LEAST_SQUARES, LOGISTIC, SOFTMAX, axpy, axpy2, axpy_dot2, bad_label, binary_loss,
    binary_losses, csr_logistic_rows, csr_rows, csr_softmax_passes, csr_softmax_rows, dot,
    floating, index_t, ptrdiff_t, saxpy, sdot, smaxpy, smdot2, softmax_derivatives4, softmax_scores,
)

#: True when compiled with OpenMP (``n_threads > 1`` runs in parallel)
OPENMP = bool(GDCODE_HAVE_OPENMP)
#: True in the bounds-checked debug build (``-Dkernel-debug=true``)
DEBUG = bool(GDCODE_KERNEL_DEBUG)


# ---------------------------------------------------------------------------- tuning

cdef struct Tuning:
    # bytes of each dense row stream prefetched ahead of the loops that read it, for float64
    # and float32 rows (0: no software prefetch)
    ptrdiff_t dense_ahead[2]
    # CSR entries prefetched ahead of the row being read (data and indices; 0: none)
    ptrdiff_t csr_ahead
    # KiB: the largest interleaved copy of W and G (all threads) on which softmax CSR rows
    # go in one fused pass; larger: two passes (see _run_csr)
    ptrdiff_t softmax_fused_kib
    # KiB of one thread's chunk of softmax scores in the two-pass loop
    ptrdiff_t softmax_chunk_kib

cdef enum:
    # built-in defaults of the softmax CSR parameters (KiB); calibrate.py sets the first from
    # this machine's last-level cache (a quarter of it: this default for 8 MiB)
    SOFTMAX_FUSED_KIB = 2048
    SOFTMAX_CHUNK_KIB = 4096

# the built-in defaults (rowops.h), until set_tuning replaces them
cdef Tuning _tuning
_tuning.dense_ahead[0] = GD_AHEAD2_f64
_tuning.dense_ahead[1] = GD_AHEAD2_f32
_tuning.csr_ahead = GD_CSR_AHEAD
_tuning.softmax_fused_kib = SOFTMAX_FUSED_KIB
_tuning.softmax_chunk_kib = SOFTMAX_CHUNK_KIB

#: the tunable parameters: bytes (dense rows) or entries (CSR) prefetched ahead; KiB of the
#: largest copy on which softmax CSR rows go in one fused pass, and of a chunk of the other
TUNABLE = ("dense_ahead_f64", "dense_ahead_f32", "csr_ahead", "softmax_fused_kib",
           "softmax_chunk_kib")
#: the largest value set_tuning accepts
TUNING_MAX = 65536
DEFAULT_TUNING = {"dense_ahead_f64": GD_AHEAD2_f64, "dense_ahead_f32": GD_AHEAD2_f32,
                  "csr_ahead": GD_CSR_AHEAD, "softmax_fused_kib": SOFTMAX_FUSED_KIB,
                  "softmax_chunk_kib": SOFTMAX_CHUNK_KIB}


def tuning():
    """The machine-dependent parameters in use, a dict keyed by :data:`TUNABLE`."""
    return {"dense_ahead_f64": _tuning.dense_ahead[0], "dense_ahead_f32": _tuning.dense_ahead[1],
            "csr_ahead": _tuning.csr_ahead, "softmax_fused_kib": _tuning.softmax_fused_kib,
            "softmax_chunk_kib": _tuning.softmax_chunk_kib}


def set_tuning(**params):
    """Set some of the machine-dependent parameters (names of :data:`TUNABLE`, integers 0 to
    :data:`TUNING_MAX`): the prefetch distances (0 turns that software prefetch off), the
    largest interleaved copy (KiB) on which softmax CSR rows go in one fused pass rather than
    two (0: always two), and the KiB of a chunk of the two passes (0: one row). They change
    only the speed of the kernels, never their results. Unknown names or bad values raise
    ValueError and set nothing."""
    for name, value in params.items():
        if name not in TUNABLE:
            raise ValueError(f"unknown tuning parameter {name!r}; known: {', '.join(TUNABLE)}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= TUNING_MAX:
            raise ValueError(f"{name} must be an integer from 0 to {TUNING_MAX}, got {value!r}")
    for name, value in params.items():
        if name == "dense_ahead_f64":
            _tuning.dense_ahead[0] = value
        elif name == "dense_ahead_f32":
            _tuning.dense_ahead[1] = value
        elif name == "csr_ahead":
            _tuning.csr_ahead = value
        elif name == "softmax_fused_kib":
            _tuning.softmax_fused_kib = value
        else:
            _tuning.softmax_chunk_kib = value


# ---------------------------------------------------------------------------- row loops

cdef enum:
    # rows in a group of the dense softmax rows of _dense_rows
    PIPE = 4
    # rows in a group of the dense binary pipeline (a multiple of 4; see _dense_rows)
    DPIPE = 8
    # the largest interleaved copy of w and g (doubles, all threads) of _run_csr: 32 MiB
    INTERLEAVE_MAX = 4194304
    # the largest copy buffer kept for the next call (doubles): 16 MiB
    SPARE_MAX = 2097152


cdef ptrdiff_t _dense_rows(int obj, const floating[:, ::1] X, const double[::1] y,
                           const double[::1] coef, const double *W, double *G,
                           ptrdiff_t n_classes, ptrdiff_t lo, ptrdiff_t hi, double *s,
                           double *loss_out, ptrdiff_t ahead) noexcept nogil:
    """Rows lo:hi into G; returns the number of bad labels (softmax). ``ahead``: bytes of
    each row stream prefetched ahead (speed only)."""
    cdef ptrdiff_t i, k, cls, nc, p = X.shape[1], n_bad = 0
    cdef double c, d, loss = 0.0
    cdef const floating *x_old[DPIPE]
    cdef const floating *x_new[DPIPE]
    cdef double a_old[DPIPE]
    cdef double margin[DPIPE]
    cdef double yb[DPIPE]
    cdef double cb[DPIPE]
    cdef ptrdiff_t b, nb, n_old = 0
    if obj != SOFTMAX:
        if p == 0:
            for i in range(lo, hi):
                if coef[i] != 0.0:
                    loss = loss + coef[i] * binary_loss(obj, 0.0, y[i], &d)
            loss_out[0] = loss
            return 0
        # Rows in order, in groups of DPIPE: the dot products of a group run in the loops
        # that also add the updates of the previous group's rows, still in L1, so that
        # loads from memory and arithmetic overlap; two rows per loop (axpy_dot2), so that
        # one load and store of G serves two updates and the loop has a quarter fewer
        # instructions per row. Then the group's losses and derivatives are computed
        # together (logistic rows four at a time in one vector exp and log1p). One
        # sequential stream through X, prefetched ahead inside the loops (rowops.h).
        # Measured faster than an update after each dot, than one row per loop (5-9% slower),
        # than blocks of dots then updates, and than four rows per loop. Groups of 8 rows
        # rather than 4 halve the pauses per row while a group's losses are computed, which
        # the out-of-order window cannot hide behind the next group's loads (float32
        # logistic rows on the EPYC VM, under load: 47% -> 58-64% of a bare read; 16 rows
        # no better; a lag of two groups between dots and updates no better either: the
        # window, not the dependency, is the limit). An update runs even when its
        # coefficient is 0 (an inactive hinge row): cheaper than a branch that the data
        # decides. A full group's updates go in pairs, the last (partial) group's row by
        # row.
        i = lo
        while i < hi:
            nb = 0
            while nb < DPIPE and i < hi:
                c = coef[i]
                if c != 0.0:
                    x_new[nb] = &X[i, 0]
                    yb[nb] = y[i]
                    cb[nb] = c
                    nb = nb + 1
                i = i + 1
            if nb == DPIPE and n_old == DPIPE:
                for b in range(0, DPIPE, 2):
                    axpy_dot2(a_old[b], a_old[b + 1], x_old[b], x_old[b + 1], G, x_new[b],
                              x_new[b + 1], W, p, &margin[b], ahead)
            else:
                if n_old == DPIPE:
                    for b in range(0, DPIPE, 2):
                        axpy2(a_old[b], a_old[b + 1], x_old[b], x_old[b + 1], G, p)
                else:
                    for b in range(n_old):
                        axpy(a_old[b], x_old[b], G, p)
                for b in range(nb):
                    margin[b] = dot(x_new[b], W, p, ahead)
            for b in range(0, nb, 4):
                loss = loss + binary_losses(obj, &margin[b], &yb[b], &cb[b], min(4, nb - b),
                                            &a_old[b])
            for b in range(nb):
                x_old[b] = x_new[b]
            n_old = nb
        if n_old == DPIPE:
            for b in range(0, DPIPE, 2):
                axpy2(a_old[b], a_old[b + 1], x_old[b], x_old[b + 1], G, p)
        else:
            for b in range(n_old):
                axpy(a_old[b], x_old[b], G, p)
        loss_out[0] = loss
        return 0
    # Softmax: rows in groups of up to PIPE, classes in chunks of up to 4 (rowops.h): the
    # scores of two rows and a chunk in one loop, then each chunk of G updated by the whole
    # group in one loop (one load and store of G for four rows). s holds PIPE rows of
    # n_classes scores, which become the derivatives c (p_k - [k == cls]).
    i = lo
    while i < hi:
        nb = 0
        while nb < PIPE and i < hi:
            c = coef[i]
            if c != 0.0:
                if bad_label(y[i], n_classes):
                    n_bad = n_bad + 1
                else:
                    x_new[nb] = &X[i, 0] if p > 0 else NULL
                    yb[nb] = y[i]
                    cb[nb] = c
                    nb = nb + 1
            i = i + 1
        if nb == 0:
            break
        for b in range(nb, PIPE):
            x_new[b] = x_new[0]
        for k in range(0, n_classes, 4):
            nc = min(4, n_classes - k)
            if p == 0:
                for b in range(nb):
                    for cls in range(k, k + nc):
                        s[b * n_classes + cls] = 0.0
                continue
            smdot2(W + k * p, p, nc, x_new[0], x_new[1], &s[k], &s[n_classes + k])
            if nb > 2:
                smdot2(W + k * p, p, nc, x_new[2], x_new[3], &s[2 * n_classes + k],
                       &s[3 * n_classes + k])
        if nb == 4:
            loss = softmax_derivatives4(s, n_classes, yb, cb, loss)
        else:
            for b in range(nb):
                cls = <ptrdiff_t> yb[b]
                c = cb[b]
                loss = loss + c * softmax_scores(&s[b * n_classes], n_classes, cls)
                for k in range(n_classes):
                    d = s[b * n_classes + k]
                    s[b * n_classes + k] = c * (d - 1.0) if k == cls else c * d
        if p > 0:
            for k in range(0, n_classes, 4):
                smaxpy(&s[k], n_classes, nb, x_new, G + k * p, p, min(4, n_classes - k))
    loss_out[0] = loss
    return n_bad


cdef ptrdiff_t _csr_rows(int obj, const floating[::1] data, const index_t[::1] indices,
                         const index_t[::1] indptr, const double[::1] y, const double[::1] coef,
                         const double *W, double *G, ptrdiff_t n_classes, ptrdiff_t p,
                         ptrdiff_t stride, bint transposed, ptrdiff_t chunk, ptrdiff_t lo,
                         ptrdiff_t hi, double *s, double *loss_out, ptrdiff_t *n_bad_index,
                         ptrdiff_t ahead) noexcept nogil:
    """Rows lo:hi into G; returns the number of bad labels, counts bad indices.

    ``stride`` (binary objectives): ``w_j`` at ``W[j stride]``, ``g_j`` at ``G[j stride]``.
    ``transposed`` (softmax), ``chunk`` 0: W and G are one copy, column-major and interleaved
    by column and by four classes (rowops.h, softmax rows): ``W[k, j]`` at ``W[2 Kp j + 8 (k
    // 4) + k % 4]``, ``G[k, j]`` 4 doubles further, ``G`` pointing at the same 64-byte
    aligned copy; ``s`` has room for ``2 Kp`` doubles. ``transposed``, ``chunk`` > 0: the two
    passes over chunks of that many rows on separate copies, ``W[k, j]`` at ``W[Kp j + k]``
    and ``G[k, j]`` at ``G[Kp j + k]``; ``s`` has room for ``chunk`` Kp doubles and then
    ``chunk`` row numbers.
    """
    cdef ptrdiff_t i, k, cls, start, nnz, bad, n_bad = 0
    cdef double c, loss = 0.0
    cdef const floating *v = NULL
    cdef const index_t *idx = NULL
    # entry pointers by arithmetic: an empty row may start at the end of the arrays
    cdef const floating *vbase = &data[0] if data.shape[0] > 0 else NULL
    cdef const index_t *ibase = &indices[0] if indices.shape[0] > 0 else NULL
    if obj == LOGISTIC:
        # As for dense rows, in groups of 4: each row's dot product runs in one loop with the
        # update of the matching row of the previous group (still in L1), whose derivative
        # came with its group's four losses in one vector exp and log1p (rowops.h
        # gd_csr_logistic_rows).
        loss_out[0] = csr_logistic_rows(vbase, ibase, &indptr[0], lo, hi, &y[0], &coef[0], W,
                                        G, stride, p, ahead, n_bad_index)
        return 0
    if obj != SOFTMAX:
        # Row by row, each row's dot product in one loop with the previous row's update,
        # whose lines its own dot product has just gathered into L1 with the interleaved
        # layout (stride 2, see _run_csr): rowops.h gd_csr_rows. Measured faster (about 8%
        # in a standalone C loop on the EPYC VM) than each update right after its dot
        # product, which was faster than blocks of 2, 4 or 8 rows (Xeon VM); a lag of 2 or 4
        # rows is slower than 1.
        loss_out[0] = csr_rows(obj, vbase, ibase, &indptr[0], lo, hi, &y[0], &coef[0], W, G,
                               stride, p, ahead, n_bad_index)
        return 0
    if transposed and chunk > 0:
        # every row's scores of a chunk on W's copy, then every row's update on G's
        # (rowops.h gd_csr_softmax_passes)
        loss_out[0] = csr_softmax_passes(vbase, ibase, &indptr[0], lo, hi, &y[0], &coef[0], W, G,
                                         n_classes, p, ahead, s,
                                         <ptrdiff_t *> (s + chunk * ((n_classes + 3) // 4 * 4)),
                                         chunk, n_bad_index, &n_bad)
        return n_bad
    if transposed:
        # each row's scores in one loop with the previous row's update (rowops.h
        # gd_csr_softmax_rows)
        loss_out[0] = csr_softmax_rows(vbase, ibase, &indptr[0], lo, hi, &y[0], &coef[0], G,
                                       n_classes, p, ahead, s, n_bad_index, &n_bad)
        return n_bad
    # few nonzeros for their columns: row-major W and G, class by class
    for i in range(lo, hi):
        c = coef[i]
        if c == 0.0:
            continue
        start = indptr[i]
        nnz = indptr[i + 1] - start
        if nnz > 0:
            v = &data[start]
            idx = &indices[start]
        bad = 0
        if bad_label(y[i], n_classes):
            n_bad = n_bad + 1
            continue
        cls = <ptrdiff_t> y[i]
        for k in range(n_classes):
            s[k] = sdot(v, idx, nnz, W + k * p, 1, p, &bad)
        if bad:
            n_bad_index[0] += bad
            continue
        loss = loss + c * softmax_scores(s, n_classes, cls)
        for k in range(n_classes):
            s[k] = c * (s[k] - 1.0) if k == cls else c * s[k]
        for k in range(n_classes):
            if s[k] != 0.0:
                saxpy(s[k], v, idx, nnz, G + k * p, 1)
    loss_out[0] = loss
    return n_bad


# ---------------------------------------------------------------------------- drivers

cdef int _threads(int n_threads, ptrdiff_t n_rows) except -1:
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if not GDCODE_HAVE_OPENMP or n_rows < 2:
        return 1
    return <int> min(<ptrdiff_t> n_threads, n_rows)


cdef class _Scratch:
    """Per-call buffers: per-chunk losses, error counts, softmax scores (``n_scores`` a
    chunk), chunk gradients."""

    cdef double *buf
    cdef double *loss
    cdef double *scores
    cdef double *grads
    cdef ptrdiff_t *bad

    def __cinit__(self, int nt, ptrdiff_t n_scores, ptrdiff_t n_params):
        cdef ptrdiff_t size = nt * (n_scores + 1) + (nt - 1) * n_params
        self.buf = <double *> calloc(size, sizeof(double))
        self.bad = <ptrdiff_t *> calloc(2 * nt, sizeof(ptrdiff_t))
        if self.buf == NULL or self.bad == NULL:
            raise MemoryError(f"cannot allocate {size} doubles of kernel scratch")
        self.loss = self.buf
        self.scores = self.buf + nt
        self.grads = self.buf + nt * (n_scores + 1)

    def __dealloc__(self):
        free(self.buf)
        free(self.bad)


cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #ifdef __linux__
    #include <sys/mman.h>
    #endif
    /* n zeroed doubles, to be freed with free(). From 2 MiB up: 2 MiB aligned and, where
     * Linux has transparent huge pages, advised onto them. */
    static double *gd_alloc_doubles(size_t n)
    {
        const size_t huge = (size_t)2 << 20, bytes = n * sizeof(double);
        void *p = NULL;
        if (bytes < huge)
            return (double *)calloc(n, sizeof(double));
        if (posix_memalign(&p, huge, bytes) != 0)
            return NULL;
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        madvise(p, bytes / huge * huge, MADV_HUGEPAGE);  /* advice only: failure is harmless */
    #endif
        memset(p, 0, bytes);
        return (double *)p;
    }
    """
    double *gd_alloc_doubles(size_t n) nogil


cdef class _Doubles:
    """A buffer of doubles (zeroed when new), freed with its owner.

    From 2 MiB up it lies on transparent huge pages where Linux has them (``madvise``, as
    numpy does for its large arrays): a copy of the parameters that rows read at random
    columns then costs few TLB misses.
    """

    cdef double *data
    cdef ptrdiff_t size

    def __cinit__(self, ptrdiff_t size):
        self.data = gd_alloc_doubles(max(size, 1))
        if self.data == NULL:
            raise MemoryError(f"cannot allocate {size} doubles of kernel scratch")
        self.size = size

    def __dealloc__(self):
        free(self.data)


# One spare copy buffer, kept between calls: a fresh one of a few MB costs its page faults at
# every call (about 0.5 ms for the 800 KB interleaved copy of the CSR benchmark block, 5 ms
# for the softmax one, on the EPYC VM). Taken and given back while holding the GIL, so
# concurrent calls never share it (a call that finds it taken allocates its own). Its
# contents are not zeroed: callers write every double they read.
cdef object _spare = None


cdef inline double *_align64(double *p) noexcept nogil:
    """``p`` moved up to the next 64-byte boundary (at most 7 doubles further)."""
    return <double *> ((<size_t> p + 63) & ~(<size_t> 63))


cdef _Doubles _take(ptrdiff_t size):
    global _spare
    cdef _Doubles buf = _spare
    if buf is not None and buf.size >= size:
        _spare = None
        return buf
    return _Doubles(size)


cdef void _give(_Doubles buf):
    global _spare
    if buf is not None and buf.size <= SPARE_MAX and (_spare is None
                                                      or (<_Doubles> _spare).size < buf.size):
        _spare = buf


cdef double _finish(_Scratch sc, int n_grads, double *G, ptrdiff_t n_params, ptrdiff_t n_cols,
                    int nt) except? -1.0:
    """Add chunk gradients 1..n_grads-1 into G in order; sum the nt chunk losses; raise on
    counted errors."""
    cdef ptrdiff_t t, j, n_label = 0, n_index = 0
    cdef double loss = 0.0
    cdef double *g
    for t in range(nt):
        loss += sc.loss[t]
        n_label += sc.bad[t]
        n_index += sc.bad[nt + t]
    with nogil:
        for t in range(1, n_grads):
            g = sc.grads + (t - 1) * n_params
            for j in range(n_params):
                G[j] += g[j]
    if n_index:
        raise ValueError(f"{n_index} column indices are outside 0..{n_cols - 1}: the CSR "
                         f"matrix does not match the {n_cols} columns of the parameters")
    if n_label:
        raise ValueError(f"{n_label} labels are not class numbers 0..K-1 (K from the "
                         "parameter shape); encode the classes as 0..K-1")
    return loss


cdef double _run_dense(int obj, const floating[:, ::1] X, const double[::1] y,
                       const double[::1] coef, const double *W, double *G, ptrdiff_t n_classes,
                       int n_threads) except? -1.0:
    cdef ptrdiff_t n = X.shape[0], p = X.shape[1], t, lo, hi
    cdef int nt = _threads(n_threads, n)
    cdef _Scratch sc = _Scratch(nt, PIPE * n_classes, n_classes * p)
    cdef ptrdiff_t ahead = _tuning.dense_ahead[0 if floating is double else 1]
    if nt == 1:
        with nogil:
            sc.bad[0] = _dense_rows(obj, X, y, coef, W, G, n_classes, 0, n, sc.scores, sc.loss,
                                    ahead)
    else:
        with nogil:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                lo = t * n // nt
                hi = (t + 1) * n // nt
                sc.bad[t] = _dense_rows(obj, X, y, coef, W,
                                        G if t == 0 else sc.grads + (t - 1) * n_classes * p,
                                        n_classes, lo, hi, sc.scores + t * PIPE * n_classes,
                                        sc.loss + t, ahead)
    return _finish(sc, nt, G, n_classes * p, p, nt)


cdef inline ptrdiff_t _round8(ptrdiff_t n) noexcept nogil:
    """``n`` rounded up to a multiple of 8 (doubles: a 64-byte line)."""
    return (n + 7) // 8 * 8


cdef double _run_csr(int obj, const floating[::1] data, const index_t[::1] indices,
                     const index_t[::1] indptr, const double[::1] y, const double[::1] coef,
                     const double *W, double *G, ptrdiff_t n_classes, ptrdiff_t p,
                     int n_threads) except? -1.0:
    cdef ptrdiff_t n = indptr.shape[0] - 1, t, lo, hi, j, k, P = n_classes * p
    cdef ptrdiff_t Kp = (n_classes + 3) // 4 * 4, nnz = indptr[n] - indptr[0]
    cdef int nt = _threads(n_threads, n)
    # With enough nonzeros, the rows work on a per-call copy of the parameters laid out for
    # their access pattern, one per thread; building it and adding its gradient back cost
    # O(K p) per call:
    # - softmax (at least p / 2 nonzeros): W and G column-major and interleaved by column and
    #   by four classes, classes padded to Kp (rowops.h, softmax rows), so that a nonzero
    #   reads its K parameters as a few vectors of adjacent numbers, and its update finds
    #   them in L1; 64-byte aligned, so that four classes' W and G share one line;
    # - binary objectives (at least p nonzeros): w and g interleaved (w_j at 2j, g_j at
    #   2j + 1), so that a row's update finds in L1 the lines its dot product has just
    #   gathered instead of missing L1 a second time (a standalone C loop of the benchmark
    #   block's rows one at a time: 10.2 -> 9.4 ms); up to INTERLEAVE_MAX doubles, so that
    #   a block of a very wide dataset does not double its parameter memory.
    # Which layout serves depends on the data's shape only (the summation order of the
    # gradient differs between them in the last bits), never on the machine.
    cdef bint transposed = obj == SOFTMAX and n_classes > 1 and 2 * nnz >= p
    cdef bint interleaved = obj != SOFTMAX and nnz >= p and 2 * p * nt <= INTERLEAVE_MAX
    cdef bint copied = transposed or interleaved
    cdef ptrdiff_t stride = 2 if interleaved else 1
    # Softmax rows whose interleaved copies (all threads) would be larger than
    # softmax_fused_kib go in two passes over chunks of rows instead, on a copy of W alone
    # (shared by the threads) and one of G alone a thread, each half the size: for the
    # benchmark block (10 classes padded to 12, 50000 columns) 9.6 MB against 4.8 MB, on a
    # Zen 1 VM with 8 MB of L3. Both return the same bits (rowops.h), so the choice may
    # depend on the machine: calibrate.py sets softmax_fused_kib from its last-level cache.
    cdef bint passes = transposed and nt * 2 * Kp * p > _tuning.softmax_fused_kib * 128
    # rows a chunk: softmax_chunk_kib of scores and row numbers
    cdef ptrdiff_t chunk = (max(1, min(_tuning.softmax_chunk_kib * 128 // (Kp + 1),
                                       (n + nt - 1) // nt)) if passes else 0)
    cdef ptrdiff_t wsize = _round8(Kp * p)  # doubles of a copy of W or G alone
    cdef ptrdiff_t block  # doubles of one thread's part of the copy
    cdef ptrdiff_t shared = wsize if passes else 0  # doubles before the threads' parts
    if passes:
        block = wsize + _round8(chunk * Kp) + _round8(chunk)
    elif transposed:
        block = 2 * Kp * p
    else:
        block = 2 * p
    cdef _Scratch sc = _Scratch(nt, 2 * Kp, 0 if copied else P)
    cdef _Doubles copy = None
    cdef double *cbase = NULL
    cdef double *c
    cdef const double *wt
    cdef double *gt
    cdef double *st
    cdef ptrdiff_t ahead = _tuning.csr_ahead
    if copied:
        copy = _take(shared + nt * block + 8)
        cbase = _align64(copy.data)
        with nogil:
            if passes:
                for j in range(p):
                    for k in range(Kp):
                        cbase[Kp * j + k] = W[k * p + j] if k < n_classes else 0.0
            for t in range(nt):
                c = cbase + shared + t * block
                if passes:
                    for j in range(wsize):
                        c[j] = 0.0
                elif transposed:
                    for j in range(p):
                        for k in range(2 * Kp):
                            c[2 * Kp * j + k] = 0.0
                        for k in range(n_classes):
                            c[2 * Kp * j + 8 * (k // 4) + k % 4] = W[k * p + j]
                else:
                    for j in range(p):
                        c[2 * j] = W[j]
                        c[2 * j + 1] = 0.0
    with nogil:
        if nt == 1:
            sc.bad[0] = _csr_rows(obj, data, indices, indptr, y, coef,
                                  <const double *> cbase if copied else W,
                                  (cbase + shared if passes else cbase + (0 if transposed else 1))
                                  if copied else G, n_classes, p, stride, transposed, chunk, 0, n,
                                  cbase + shared + wsize if passes else sc.scores, sc.loss,
                                  sc.bad + 1, ahead)
        else:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                lo = t * n // nt
                hi = (t + 1) * n // nt
                st = sc.scores + t * 2 * Kp
                if passes:
                    wt = cbase
                    gt = cbase + shared + t * block
                    st = gt + wsize
                elif copied:
                    wt = cbase + t * block
                    gt = cbase + t * block + (0 if transposed else 1)
                else:
                    wt = W
                    gt = G if t == 0 else sc.grads + (t - 1) * P
                sc.bad[t] = _csr_rows(obj, data, indices, indptr, y, coef, wt, gt, n_classes, p,
                                      stride, transposed, chunk, lo, hi, st, sc.loss + t,
                                      sc.bad + nt + t, ahead)
        # the threads' gradients added into G in thread order
        if transposed:
            for t in range(nt):
                c = cbase + shared + t * block
                for k in range(n_classes):
                    if passes:
                        for j in range(p):
                            G[k * p + j] += c[Kp * j + k]
                    else:
                        for j in range(p):
                            G[k * p + j] += c[2 * Kp * j + 8 * (k // 4) + k % 4 + 4]
        elif interleaved:
            for t in range(nt):
                c = cbase + t * block + 1
                for j in range(p):
                    G[j] += c[2 * j]
    _give(copy)
    return _finish(sc, 1 if copied else nt, G, P, p, nt)


# ---------------------------------------------------------------------------- checks

cdef int _check_rows(ptrdiff_t n, const double[::1] y, const double[::1] coef) except -1:
    if y.shape[0] != n or coef.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} entries and coef {coef.shape[0]}; both must "
                         f"have one per row ({n} rows)")
    return 0


cdef int _check_binary(ptrdiff_t p, const double[::1] w, const double[::1] grad) except -1:
    if w.shape[0] != p or grad.shape[0] != p:
        raise ValueError(f"w has {w.shape[0]} entries and grad {grad.shape[0]}; both must "
                         f"have one per column ({p} columns)")
    return 0


cdef int _check_softmax(ptrdiff_t p, const double[:, ::1] W, const double[:, ::1] G) except -1:
    if W.shape[0] < 1 or W.shape[1] != p or G.shape[0] != W.shape[0] or G.shape[1] != p:
        raise ValueError(f"W has shape ({W.shape[0]}, {W.shape[1]}) and G ({G.shape[0]}, "
                         f"{G.shape[1]}); both must be (K, {p}) with K >= 1 classes")
    return 0


cdef ptrdiff_t _check_csr(ptrdiff_t n_data, ptrdiff_t n_indices,
                          const index_t[::1] indptr) except -1:
    """Number of rows; ValueError unless indptr is non-decreasing within the data."""
    cdef ptrdiff_t n = indptr.shape[0] - 1, i, bad = 0
    if n < 0:
        raise ValueError("indptr is empty; it needs n_rows + 1 entries")
    with nogil:
        if indptr[0] < 0 or indptr[n] > n_data or indptr[n] > n_indices:
            bad = 1
        for i in range(n):
            if indptr[i + 1] < indptr[i]:
                bad = 1
    if bad:
        raise ValueError(f"indptr must be non-decreasing from >= 0 up to at most the "
                         f"{min(n_data, n_indices)} stored entries")
    return n


cdef inline const double *_cp(const double[::1] a) noexcept:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline double *_p(double[::1] a) noexcept:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline const double *_cp2(const double[:, ::1] a) noexcept:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef inline double *_p2(double[:, ::1] a) noexcept:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef double _binary_dense(int obj, const floating[:, ::1] X, const double[::1] y,
                          const double[::1] coef, const double[::1] w, double[::1] grad,
                          int n_threads) except? -1.0:
    _check_rows(X.shape[0], y, coef)
    _check_binary(X.shape[1], w, grad)
    if X.shape[0] == 0:
        return 0.0
    return _run_dense(obj, X, y, coef, _cp(w), _p(grad), 1, n_threads)


cdef double _binary_csr(int obj, const floating[::1] data, const index_t[::1] indices,
                        const index_t[::1] indptr, const double[::1] y, const double[::1] coef,
                        const double[::1] w, double[::1] grad, int n_threads) except? -1.0:
    cdef ptrdiff_t n = _check_csr(data.shape[0], indices.shape[0], indptr)
    _check_rows(n, y, coef)
    if grad.shape[0] != w.shape[0]:
        raise ValueError(f"w has {w.shape[0]} entries and grad {grad.shape[0]}; they must match")
    if n == 0:
        return 0.0
    return _run_csr(obj, data, indices, indptr, y, coef, _cp(w), _p(grad), 1, w.shape[0],
                    n_threads)


# ---------------------------------------------------------------------------- kernels

def logistic_dense(const floating[:, ::1] X, const double[::1] y, const double[::1] coef,
                   const double[::1] w, double[::1] grad, int n_threads=1):
    """Add ``sum_i coef_i grad log(1 + exp(-y_i x_i.w))`` to ``grad``; return the loss sum."""
    return _binary_dense(LOGISTIC, X, y, coef, w, grad, n_threads)


def least_squares_dense(const floating[:, ::1] X, const double[::1] y, const double[::1] coef,
                        const double[::1] w, double[::1] grad, int n_threads=1):
    """Add ``sum_i coef_i (x_i.w - y_i) x_i`` to ``grad``; return ``sum_i coef_i (x_i.w - y_i)^2 / 2``."""
    return _binary_dense(LEAST_SQUARES, X, y, coef, w, grad, n_threads)


def hinge_dense(const floating[:, ::1] X, const double[::1] y, const double[::1] coef,
                const double[::1] w, double[::1] grad, int n_threads=1):
    """Add ``sum_i coef_i`` times the subgradient of ``max(0, 1 - y_i x_i.w)`` to ``grad``; return the loss sum."""
    return _binary_dense(HINGE, X, y, coef, w, grad, n_threads)


def softmax_dense(const floating[:, ::1] X, const double[::1] y, const double[::1] coef,
                  const double[:, ::1] W, double[:, ::1] G, int n_threads=1):
    """Add ``sum_i coef_i grad -log softmax(W x_i)[y_i]`` to ``G`` (K, n_cols); return the loss sum."""
    _check_rows(X.shape[0], y, coef)
    _check_softmax(X.shape[1], W, G)
    if X.shape[0] == 0:
        return 0.0
    return _run_dense(SOFTMAX, X, y, coef, _cp2(W), _p2(G), W.shape[0], n_threads)


def logistic_csr(const floating[::1] data, const index_t[::1] indices, const index_t[::1] indptr,
                 const double[::1] y, const double[::1] coef, const double[::1] w,
                 double[::1] grad, int n_threads=1):
    """CSR rows ``(data, indices, indptr)``: as :func:`logistic_dense`."""
    return _binary_csr(LOGISTIC, data, indices, indptr, y, coef, w, grad, n_threads)


def least_squares_csr(const floating[::1] data, const index_t[::1] indices,
                      const index_t[::1] indptr, const double[::1] y, const double[::1] coef,
                      const double[::1] w, double[::1] grad, int n_threads=1):
    """CSR rows ``(data, indices, indptr)``: as :func:`least_squares_dense`."""
    return _binary_csr(LEAST_SQUARES, data, indices, indptr, y, coef, w, grad, n_threads)


def hinge_csr(const floating[::1] data, const index_t[::1] indices, const index_t[::1] indptr,
              const double[::1] y, const double[::1] coef, const double[::1] w,
              double[::1] grad, int n_threads=1):
    """CSR rows ``(data, indices, indptr)``: as :func:`hinge_dense`."""
    return _binary_csr(HINGE, data, indices, indptr, y, coef, w, grad, n_threads)


def softmax_csr(const floating[::1] data, const index_t[::1] indices, const index_t[::1] indptr,
                const double[::1] y, const double[::1] coef, const double[:, ::1] W,
                double[:, ::1] G, int n_threads=1):
    """CSR rows ``(data, indices, indptr)``: as :func:`softmax_dense`, columns ``W.shape[1]``."""
    cdef ptrdiff_t n = _check_csr(data.shape[0], indices.shape[0], indptr)
    _check_rows(n, y, coef)
    _check_softmax(W.shape[1], W, G)
    if n == 0:
        return 0.0
    return _run_csr(SOFTMAX, data, indices, indptr, y, coef, _cp2(W), _p2(G), W.shape[0],
                    W.shape[1], n_threads)
