"""numpy twins of the compiled kernels.

Each function has the signature of its compiled counterpart in ``gdcode.kernels.linear`` or
``gdcode.kernels.hogwild`` (``n_threads`` is accepted and ignored). The loss-and-gradient
twins add ``sum_i coef_i * grad loss_i(w)`` into the preallocated ``grad`` and return
``sum_i coef_i * loss_i(w)``, in two passes over ``X`` (``X @ w``, then ``X.T @ r``). They are
the reference the compiled kernels are tested against and the fallback when the extension
is not built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


def _log1pexp(z: np.ndarray) -> np.ndarray:
    """``log(1 + exp(z))`` without overflow."""
    return np.logaddexp(0.0, z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _check_rows(n: int, y: np.ndarray, coef: np.ndarray) -> None:
    if y.shape[0] != n or coef.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} entries and coef {coef.shape[0]}; both must "
                         f"have one per row ({n} rows)")


def _check_binary(p: int, w: np.ndarray, grad: np.ndarray) -> None:
    if w.shape[0] != p or grad.shape[0] != p:
        raise ValueError(f"w has {w.shape[0]} entries and grad {grad.shape[0]}; both must "
                         f"have one per column ({p} columns)")


def binary_derivative(objective: str, margin: np.ndarray, y: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per-row loss and its derivative with respect to the margin ``x.w``.

    Hinge takes the subgradient 0 at the kink ``y x.w = 1``.
    """
    if objective == "logistic":
        z = -y * margin
        return _log1pexp(z), -y * _sigmoid(z)
    if objective == "least-squares":
        r = margin - y
        return 0.5 * r * r, r
    if objective == "hinge":
        z = 1.0 - y * margin
        active = z > 0
        return np.where(active, z, 0.0), np.where(active, -y, 0.0)
    raise ValueError(f"unknown binary objective {objective!r}")


def softmax_rows(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``-log softmax(s)[label]`` and the probabilities, for scores ``(n, K)``."""
    smax = scores.max(axis=1, keepdims=True)
    e = np.exp(scores - smax)
    total = e.sum(axis=1, keepdims=True)
    rows = np.arange(scores.shape[0])
    loss = (smax[:, 0] + np.log(total[:, 0])) - scores[rows, labels]
    return loss, e / total


def class_labels(y: np.ndarray, n_classes: int) -> np.ndarray:
    """``y`` as integer classes; ValueError unless every label is one of 0..n_classes-1."""
    ok = (y >= 0) & (y < n_classes) & (np.floor(y) == y)
    if not np.all(ok):
        raise ValueError(f"{int(np.count_nonzero(~ok))} labels are not class numbers "
                         f"0..K-1 (K={n_classes}); encode the classes as 0..K-1")
    return y.astype(np.intp)


def _binary(objective, X, y, coef, w, grad) -> float:
    active = coef != 0  # a skipped row contributes nothing, even a non-finite one
    if not np.all(active):
        X, y, coef = X[np.flatnonzero(active)], y[active], coef[active]
    margin = np.asarray(X @ w, dtype=np.float64)
    loss, d = binary_derivative(objective, margin, y)
    grad += np.asarray(X.T @ (coef * d), dtype=np.float64).ravel()
    return float(coef @ loss)


def _softmax(X, y, coef, W, G) -> float:
    active = coef != 0
    if not np.all(active):
        X, y, coef = X[np.flatnonzero(active)], y[active], coef[active]
    labels = class_labels(y, W.shape[0])
    scores = np.asarray(X @ W.T, dtype=np.float64)
    loss, prob = softmax_rows(scores, labels)
    prob[np.arange(labels.size), labels] -= 1.0
    G += np.asarray((X.T @ (coef[:, None] * prob)).T, dtype=np.float64)
    return float(coef @ loss)


def _dense(X, y, coef):
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {X.shape}")
    _check_rows(X.shape[0], y, coef)
    return X


def _binary_dense(objective: str, X, y, coef, w, grad) -> float:
    X = _dense(X, y, coef)
    _check_binary(X.shape[1], w, grad)
    return _binary(objective, X, y, coef, w, grad)


def _binary_csr(objective: str, data, indices, indptr, y, coef, w, grad) -> float:
    if grad.shape[0] != w.shape[0]:
        raise ValueError(f"w has {w.shape[0]} entries and grad {grad.shape[0]}; they must match")
    X = csr_block(data, indices, indptr, w.shape[0])
    _check_rows(X.shape[0], y, coef)
    return _binary(objective, X, y, coef, w, grad)


def issparse(X: Any) -> bool:
    """``scipy.sparse.issparse(X)``, without importing scipy when nothing has (then X cannot be one)."""
    import sys

    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and bool(sparse.issparse(X))


def csr_block(data, indices, indptr, n_cols: int) -> sp.csr_matrix:
    """The scipy CSR matrix of ``(data, indices, indptr)``, whose ``indptr`` may start anywhere."""
    import scipy.sparse as sp  # imported here: a rank on dense rows never needs scipy
    indptr = np.asarray(indptr)
    if indptr.size < 1:
        raise ValueError("indptr is empty; it needs n_rows + 1 entries")
    n = indptr.size - 1
    start, stop = int(indptr[0]), int(indptr[-1])
    if start < 0 or stop > len(data) or stop > len(indices) or np.any(np.diff(indptr) < 0):
        raise ValueError(f"indptr must be non-decreasing from >= 0 up to at most the "
                         f"{min(len(data), len(indices))} stored entries")
    idx = np.asarray(indices[start:stop])
    bad = int(np.count_nonzero((idx < 0) | (idx >= n_cols)))
    if bad:
        raise ValueError(f"{bad} column indices are outside 0..{n_cols - 1}: the CSR "
                         f"matrix does not match the {n_cols} columns of the parameters")
    return sp.csr_matrix((np.asarray(data[start:stop]), idx, indptr - start), shape=(n, n_cols))


def logistic_dense(X, y, coef, w, grad, n_threads: int = 1) -> float:
    """Logistic loss ``log(1 + exp(-y x.w))``: accumulate the gradient, return the loss sum."""
    return _binary_dense("logistic", X, y, coef, w, grad)


def least_squares_dense(X, y, coef, w, grad, n_threads: int = 1) -> float:
    """Squared loss ``(x.w - y)^2 / 2``: accumulate the gradient, return the loss sum."""
    return _binary_dense("least-squares", X, y, coef, w, grad)


def hinge_dense(X, y, coef, w, grad, n_threads: int = 1) -> float:
    """Hinge loss ``max(0, 1 - y x.w)`` (subgradient 0 at the kink)."""
    return _binary_dense("hinge", X, y, coef, w, grad)


def softmax_dense(X, y, coef, W, G, n_threads: int = 1) -> float:
    """Softmax cross-entropy ``-log softmax(W x)[y]``, ``W`` and ``G`` of shape ``(K, n_cols)``."""
    X = _dense(X, y, coef)
    if W.ndim != 2 or W.shape[0] < 1 or W.shape[1] != X.shape[1] or G.shape != W.shape:
        raise ValueError(f"W has shape {W.shape} and G {G.shape}; both must be "
                         f"(K, {X.shape[1]}) with K >= 1 classes")
    return _softmax(X, y, coef, W, G)


def logistic_csr(data, indices, indptr, y, coef, w, grad, n_threads: int = 1) -> float:
    """CSR rows ``(data, indices, indptr)``: as :func:`logistic_dense`."""
    return _binary_csr("logistic", data, indices, indptr, y, coef, w, grad)


def least_squares_csr(data, indices, indptr, y, coef, w, grad, n_threads: int = 1) -> float:
    """CSR rows ``(data, indices, indptr)``: as :func:`least_squares_dense`."""
    return _binary_csr("least-squares", data, indices, indptr, y, coef, w, grad)


def hinge_csr(data, indices, indptr, y, coef, w, grad, n_threads: int = 1) -> float:
    """CSR rows ``(data, indices, indptr)``: as :func:`hinge_dense`."""
    return _binary_csr("hinge", data, indices, indptr, y, coef, w, grad)


def softmax_csr(data, indices, indptr, y, coef, W, G, n_threads: int = 1) -> float:
    """CSR rows ``(data, indices, indptr)``: as :func:`softmax_dense`, columns ``W.shape[1]``."""
    if W.ndim != 2 or W.shape[0] < 1 or G.shape != W.shape:
        raise ValueError(f"W has shape {W.shape} and G {G.shape}; both must be (K, n_cols) "
                         "with K >= 1 classes")
    X = csr_block(data, indices, indptr, W.shape[1])
    _check_rows(X.shape[0], y, coef)
    return _softmax(X, y, coef, W, G)


# ----------------------------------------------------------------------------- Hogwild


def _splitmix(state: int) -> tuple[int, int]:
    state = (state + SPLITMIX_GAMMA) & _MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return state, z ^ (z >> 31)


def hogwild_rows(seed: int, thread: int, n_rows: int, n_steps: int) -> np.ndarray:
    """The rows that thread ``thread`` of the Hogwild kernel visits, in order."""
    state = (seed ^ ((thread + 1) * 0xD1B54A32D192ED03)) & _MASK
    rows = np.empty(n_steps, dtype=np.intp)
    for k in range(n_steps):
        state, z = _splitmix(state)
        rows[k] = min(int(float(z >> 11) * (1.0 / 9007199254740992.0) * float(n_rows)),
                      n_rows - 1)
    return rows


_OBJECTIVES = ("logistic", "least-squares", "hinge", "softmax")


def check_hogwild_args(objective, lr, n_steps, n_threads, l2, lr_decay, step_offset, n_classes,
                       n_params) -> int:
    """The number of columns; ValueError naming any bad argument (shared by the compiled kernel)."""
    if objective not in _OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not one of {', '.join(_OBJECTIVES)}")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}")
    if not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be >= 0, got {l2}")
    if not (np.isfinite(lr_decay) and lr_decay >= 0):
        raise ValueError(f"lr_decay must be >= 0, got {lr_decay}")
    if step_offset < 0:
        raise ValueError(f"step_offset must be >= 0, got {step_offset}")
    if objective == "softmax":
        if n_classes < 1 or n_params % n_classes:
            raise ValueError(f"softmax needs n_classes >= 1 dividing len(w) = {n_params}, "
                             f"got {n_classes}")
        return n_params // n_classes
    return n_params


def _hogwild(X, y, w, objective, lr, n_steps, seed, n_threads, l2, lr_decay, step_offset,
             n_classes, share) -> int:
    """Serial Hogwild: the thread streams one after another (the compiled kernel's order
    when it runs one thread or is built without OpenMP)."""
    n, p = X.shape
    K = n_classes if objective == "softmax" else 1
    W = w.reshape(K, p)
    sparse = issparse(X)
    for t in range(n_threads):
        for k, i in enumerate(hogwild_rows(seed, t, n, n_steps)):
            eta = lr / (1.0 + lr_decay * (step_offset + k))
            xi = X[i]
            if sparse:
                cols, vals = xi.indices, xi.data.astype(np.float64)
                if cols.size == 0:
                    continue
                s = W[:, cols] @ vals
            else:
                if p == 0:
                    continue
                vals = xi.astype(np.float64)
                s = W @ vals
            if objective == "softmax":
                cls = class_labels(np.array([y[i]]), K)[0]
                _, prob = softmax_rows(s[None, :], np.array([cls]))
                d = prob[0]
                d[cls] -= 1.0
            else:
                d = binary_derivative(objective, s, np.array([y[i]]))[1]
            if sparse:
                W[:, cols] -= eta * (d[:, None] * vals[None, :] + l2 * share[cols] * W[:, cols])
            else:
                W *= 1.0 - eta * l2
                W -= eta * d[:, None] * vals[None, :]
    return n_threads * n_steps


def hogwild_dense(X, y, w, objective, lr, n_steps, seed, n_threads=1, l2=0.0, lr_decay=0.0,
                  step_offset=0, n_classes=0) -> int:
    """Hogwild SGD on dense rows (serial twin of the compiled kernel); ``w`` is updated in place."""
    X = np.asarray(X)
    p = check_hogwild_args(objective, lr, n_steps, n_threads, l2, lr_decay, step_offset, n_classes,
                       w.shape[0])
    if p != X.shape[1]:
        raise ValueError(f"w has {w.shape[0]} entries; {objective} on {X.shape[1]} columns "
                         "does not fit")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0]} entries for {X.shape[0]} rows")
    if X.shape[0] == 0 or n_steps == 0:
        return 0
    return _hogwild(X, y, w, objective, lr, n_steps, seed, n_threads, l2, lr_decay,
                    step_offset, n_classes, None)


def hogwild_csr(data, indices, indptr, y, w, objective, lr, n_steps, seed, n_threads=1, l2=0.0,
                lr_decay=0.0, step_offset=0, n_classes=0) -> int:
    """Hogwild SGD on CSR rows (serial twin of the compiled kernel); ``w`` is updated in place."""
    p = check_hogwild_args(objective, lr, n_steps, n_threads, l2, lr_decay, step_offset, n_classes,
                       w.shape[0])
    X = csr_block(data, indices, indptr, p)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0]} entries for {X.shape[0]} rows")
    if X.shape[0] == 0 or n_steps == 0:
        return 0
    counts = np.bincount(X.indices, minlength=p).astype(np.float64)
    share = np.divide(X.shape[0], counts, out=np.zeros(p), where=counts > 0)
    return _hogwild(X, y, w, objective, lr, n_steps, seed, n_threads, l2, lr_decay,
                    step_offset, n_classes, share)


# ----------------------------------------------------------------------------- MLP
#
# The multilayer perceptron of ``--model mlp`` (gdcode.models.MLP). ``sizes`` are the layer
# widths ``(d_0, d_1, ..., d_L, K)``: ``d_0`` input columns, L hidden layers, K outputs (K = 1:
# one logistic output, labels +1/-1; K >= 2: softmax, labels 0..K-1). The parameter vector is,
# layer after layer, ``W_l`` of shape ``(d_l, d_{l-1})`` row-major, then its bias ``b_l`` of
# length ``d_l`` (:func:`mlp_layout`).

#: activations of the hidden layers
MLP_ACTIVATIONS = ("relu", "tanh")
#: the most linear maps (hidden layers + 1) a network may have (the compiled kernel's stack arrays)
MLP_MAX_LAYERS = 64


def mlp_check_sizes(sizes) -> tuple[int, ...]:
    """``sizes`` as a tuple of ints; ValueError unless every width is >= 1 and there is a layer."""
    out = tuple(int(s) for s in sizes)
    if len(out) < 2 or len(out) > MLP_MAX_LAYERS + 1 or min(out) < 1:
        raise ValueError(f"layer sizes {out} must be 2 to {MLP_MAX_LAYERS + 1} widths, each >= 1 "
                         "(input columns, hidden widths, outputs)")
    return out


def mlp_n_params(sizes) -> int:
    """Length of the parameter vector of a network of widths ``sizes``."""
    s = mlp_check_sizes(sizes)
    return sum((s[l] + 1) * s[l + 1] for l in range(len(s) - 1))


def mlp_layout(sizes) -> list[tuple[int, int, int, int]]:
    """Per linear map ``l``: ``(W offset, b offset, d_out, d_in)`` in the parameter vector."""
    s = mlp_check_sizes(sizes)
    out, off = [], 0
    for l in range(len(s) - 1):
        d_in, d_out = s[l], s[l + 1]
        out.append((off, off + d_out * d_in, d_out, d_in))
        off += (d_in + 1) * d_out
    return out


def mlp_work_size(sizes, block_rows: int, dtype) -> int:
    """Elements (of ``dtype``) of the workspace of the compiled ``mlp_dense`` for ``block_rows`` rows.

    Per row: the hidden activations, the output scores, two delta buffers of the widest layer
    and a staging row for blocks with skipped (``coef == 0``) rows; float32 adds a float32 copy
    of the parameters and a float32 gradient accumulator.
    """
    s = mlp_check_sizes(sizes)
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    widest = max(s[1:])
    per_row = sum(s[1:]) + 2 * widest + s[0]
    fixed = 2 * mlp_n_params(s) if np.dtype(dtype) == np.float32 else 0
    return fixed + block_rows * per_row


def mlp_block_rows(sizes, work_size: int, dtype) -> int:
    """The rows a workspace of ``work_size`` elements holds (0 when not even one)."""
    s = mlp_check_sizes(sizes)
    fixed = mlp_work_size(s, 1, dtype) - (sum(s[1:]) + 2 * max(s[1:]) + s[0])
    per_row = sum(s[1:]) + 2 * max(s[1:]) + s[0]
    return max(0, (int(work_size) - fixed) // per_row)


def _mlp_act(activation: str, z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0) if activation == "relu" else np.tanh(z)


def _mlp_act_grad(activation: str, h: np.ndarray) -> np.ndarray:
    """The activation's derivative from its output ``h`` (relu: 1 where h > 0; tanh: 1 - h^2)."""
    return (h > 0).astype(h.dtype) if activation == "relu" else 1 - h * h


def mlp_check_args(X, y, coef, w, grad, sizes, activation) -> tuple[int, ...]:
    """The checked ``sizes``; ValueError naming any argument that disagrees (shared by the compiled kernel)."""
    s = mlp_check_sizes(sizes)
    if activation not in MLP_ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of: {', '.join(MLP_ACTIVATIONS)}")
    if X.ndim != 2 or X.shape[1] != s[0]:
        raise ValueError(f"X has shape {X.shape}; the network takes {s[0]} columns")
    _check_rows(X.shape[0], y, coef)
    p = mlp_n_params(s)
    if w.shape != (p,) or grad.shape != (p,):
        raise ValueError(f"w has shape {w.shape} and grad {grad.shape}; the network {s} has {p} "
                         "parameters")
    return s


def mlp_forward(X, w: np.ndarray, sizes, activation: str = "relu") -> list[np.ndarray]:
    """The activations ``[X, H_1, ..., H_L, S]`` (S the output scores, before the loss) in X's dtype."""
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    layout = mlp_layout(sizes)
    hs = [X]
    for l, (ow, ob, d_out, d_in) in enumerate(layout):
        W = w[ow:ow + d_out * d_in].reshape(d_out, d_in).astype(dtype, copy=False)
        b = w[ob:ob + d_out].astype(dtype, copy=False)
        z = np.asarray(hs[-1] @ W.T, dtype=dtype) + b
        hs.append(z if l == len(layout) - 1 else _mlp_act(activation, z))
    return hs


def mlp_dense(X, y, coef, w, grad, sizes, activation: str = "relu", work=None,
              n_threads: int = 1) -> float:
    """MLP loss sum of the rows, its gradient sum added into ``grad`` (numpy twin of ``gdcode.kernels.mlp``).

    ``X`` is float64 or float32 (computed in its dtype; the parameters are cast to it), or
    scipy CSR rows (the first layer a sparse product). ``work`` and ``n_threads`` are accepted
    and ignored.
    """
    if issparse(X):
        X = X.tocsr()
    else:
        X = np.asarray(X)
    s = mlp_check_args(X, y, coef, w, grad, sizes, activation)
    active = coef != 0
    if not np.all(active):
        X, y, coef = X[np.flatnonzero(active)], y[active], coef[active]
    if X.shape[0] == 0:
        return 0.0
    K = s[-1]
    hs = mlp_forward(X, w, s, activation)
    scores = np.asarray(hs[-1], dtype=np.float64)
    dtype = hs[1].dtype
    if K == 1:
        loss, d = binary_derivative("logistic", scores[:, 0], y)
        D = (coef * d)[:, None]
    else:
        labels = class_labels(y, K)
        loss, D = softmax_rows(scores, labels)
        D[np.arange(labels.size), labels] -= 1.0
        D *= coef[:, None]
    D = D.astype(dtype)
    layout = mlp_layout(s)
    for l in range(len(layout) - 1, -1, -1):
        ow, ob, d_out, d_in = layout[l]
        grad[ow:ow + d_out * d_in] += np.asarray(D.T @ hs[l], dtype=np.float64).ravel()
        grad[ob:ob + d_out] += D.sum(axis=0, dtype=np.float64)
        if l > 0:
            W = w[ow:ow + d_out * d_in].reshape(d_out, d_in).astype(dtype, copy=False)
            D = (D @ W) * _mlp_act_grad(activation, hs[l])
    return float(coef @ loss)


def pcg64_state(entropy) -> tuple[int, int]:
    """``(state, inc)`` of ``numpy.random.PCG64(numpy.random.SeedSequence(entropy))``: the twin of
    the compiled ``gdcode.kernels.streams.pcg64_state`` (used by :class:`gdcode.streams.Reseeded`)."""
    state = np.random.PCG64(np.random.SeedSequence(list(entropy))).state["state"]
    return int(state["state"]), int(state["inc"])
