"""Objectives (docs/objectives.md): loss and gradient of a block of rows, through the kernels.

Every model has ``f(w) = (1/n) sum_i loss_i(w) + (lambda/2) ||w||^2``. A worker computes
*sums* of per-row gradients over its rows, weighted per row by its code coefficients
(:meth:`Model.loss_grad_sum`); the coordinator divides the decoded sum by n and adds
``lambda * w`` (:meth:`Model.full_gradient` does the same serially).

:class:`Model` is the interface: a plug-in implements ``loss_grad_sum`` and ``test_metrics``
in plain numpy (and ``n_params``/``n_classes`` for a parameter matrix), and registers as an
entry point of the group ``gdcode.models`` or is named by its import path ``MODULE:CLASS``
(:data:`MODELS`). The four built-in models derive from :class:`LinearModel`, which runs the
compiled kernels and the lock-free Hogwild kernel (``--threads``).

Rows are dense (a C-contiguous float64 or float32 ndarray; other dtypes are converted to
float64) or scipy CSR (another sparse format is converted to CSR, at the cost of a copy).
Both go to the compiled kernels of :mod:`gdcode.kernels` when they are built, else to their
numpy twins.

``softmax`` has the parameters ``W`` of shape ``(K, n_cols)``, flattened row-major into the
parameter vector of length ``K * n_cols`` (:meth:`Model.n_params`). The model takes K from
that length (``K = len(w) / n_cols``), so ``models.get("softmax")`` needs no argument: the
runtime sizes ``w`` with ``n_params(n_cols, source.n_classes)`` and every method follows.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gdcode import kernels
from gdcode.kernels import reference
from gdcode.registry import Registry

#: every model, by name
MODELS: Registry[type] = Registry("model", "gdcode.models", fixed=("compiled", "n_threads"))


class Model:
    """The objective of a model: what a run needs of it.

    A plug-in subclasses it and implements :meth:`loss_grad_sum` and :meth:`test_metrics`;
    :meth:`objective` and :meth:`full_gradient` follow. Its constructor takes the keyword
    arguments ``compiled`` and ``n_threads`` (as :class:`LinearModel`) or no arguments.

    Attributes
    ----------
    name : str
        Registry name (``--model``).
    task : str
        The dataset task it needs: ``binary``, ``regression`` or ``multiclass``.
    """

    name = ""
    task = "binary"
    #: whether ``--mode hogwild`` on CSR rows may step on the batch's non-zero columns only
    #: (:func:`gdcode.sgd.sparse_step`): true for a parameter vector that is a ``(K, n_cols)``
    #: matrix whose column j only multiplies feature j, as in the linear models. A model whose
    #: parameters mix the columns (:class:`MLP`) sets it False and gets full gradient steps.
    sparse_steps = True

    @property
    def tasks(self) -> tuple[str, ...]:
        """The dataset tasks it trains on: ``(task,)``; a model for several overrides it and
        :meth:`bind_task`."""
        return (self.task,)

    def bind_task(self, task: str) -> None:
        """Train on a dataset of ``task``, one of :attr:`tasks` (the run calls it before
        :meth:`n_params` when :attr:`tasks` has more than one)."""
        if task not in self.tasks:
            raise ValueError(f"{self.name or type(self).__name__} trains on {' or '.join(self.tasks)} "
                             f"datasets, not {task}")
        self.task = task

    @property
    def supports_hogwild_threads(self) -> bool:
        """True when the model has the lock-free multi-threaded ``hogwild`` method."""
        return callable(getattr(self, "hogwild", None))

    def n_params(self, n_cols: int, n_classes: int = 2) -> int:
        """Length of the parameter vector."""
        return n_cols

    def n_classes(self, n_params: int, n_cols: int) -> int:
        """Rows of the parameter matrix: 1 for the binary and regression models."""
        if n_params != n_cols:
            raise ValueError(f"{self.name} on {n_cols} columns needs {n_cols} parameters, "
                             f"got {n_params}")
        return 1

    def loss_grad_sum(self, X, y: np.ndarray, coef: np.ndarray, w: np.ndarray,
                      grad: np.ndarray) -> float:
        """Add ``sum_i coef_i grad loss_i(w)`` into ``grad``; return ``sum_i coef_i loss_i(w)``.

        Parameters
        ----------
        X : numpy.ndarray or scipy.sparse matrix
            The rows, dense or CSR (a row slice ``X[lo:hi]`` of either is fine).
        y, coef : numpy.ndarray
            Labels and per-row coefficients, one per row.
        w : numpy.ndarray
            The parameter vector.
        grad : numpy.ndarray
            Float64, contiguous, the length of ``w``: the sum is added to it in place.

        Returns
        -------
        float
            The coefficient-weighted loss sum of the rows.
        """
        raise NotImplementedError

    def objective(self, X, y: np.ndarray, w: np.ndarray, l2: float) -> float:
        """``f(w)`` on the rows ``X, y``: mean loss plus ``(l2/2) ||w||^2``."""
        grad = np.zeros(np.shape(w))
        loss = self.loss_grad_sum(X, y, np.ones(X.shape[0]), w, grad)
        return loss / max(X.shape[0], 1) + 0.5 * l2 * float(w @ w)

    def full_gradient(self, X, y: np.ndarray, w: np.ndarray, l2: float) -> np.ndarray:
        """``grad f(w)`` on the rows ``X, y``."""
        grad = np.zeros(np.shape(w))
        self.loss_grad_sum(X, y, np.ones(X.shape[0]), w, grad)
        return grad / max(X.shape[0], 1) + l2 * w

    def test_metrics(self, X, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
        """Held-out metrics of ``w`` (no regularisation in the loss), e.g. ``test_loss``; ``{}`` for no rows."""
        raise NotImplementedError


class LinearModel(Model):
    """A linear model whose loss and gradient run in the kernels of :mod:`gdcode.kernels`.

    Parameters
    ----------
    compiled : bool, optional
        ``True`` insists on the compiled kernels, ``False`` uses the numpy twins, ``None``
        (default) takes the compiled ones when they are built.
    n_threads : int
        OpenMP threads of each kernel call (default 1: one per MPI rank); ignored by the
        numpy twins and by a build without OpenMP.

    Attributes
    ----------
    stem : str
        Kernel names: ``{stem}_dense`` and ``{stem}_csr``.
    kernel_objective : str
        The objective of the Hogwild kernel (``logistic``, ``least-squares``, ``hinge``,
        ``softmax``).
    """

    stem = ""
    kernel_objective = ""

    def __init__(self, compiled: bool | None = None, n_threads: int = 1) -> None:
        if int(n_threads) < 1:
            raise ValueError(f"n_threads must be at least 1, got {n_threads}")
        self.n_threads = int(n_threads)
        self._dense = kernels.get(f"{self.stem}_dense", compiled=compiled)
        self._csr = kernels.get(f"{self.stem}_csr", compiled=compiled)
        self._hogwild_dense = kernels.get("hogwild_dense", compiled=compiled)
        self._hogwild_csr = kernels.get("hogwild_csr", compiled=compiled)

    def loss_grad_sum(self, X, y, coef, w, grad):
        if X.shape[0] == 0:
            return 0.0
        X, y, coef, w = kernel_arguments(X, y, coef, w, grad)
        n_cols = X.shape[1]
        w, grad = self._shaped(w, grad, n_cols)
        if isinstance(X, np.ndarray):
            return float(self._dense(X, y, coef, w, grad, n_threads=self.n_threads))
        return float(self._csr(X.data, X.indices, X.indptr, y, coef, w, grad,
                               n_threads=self.n_threads))

    def _shaped(self, w: np.ndarray, grad: np.ndarray, n_cols: int):
        """``w`` and ``grad`` as the kernels take them (views, never copies of ``grad``)."""
        self.n_classes(w.size, n_cols)
        return w, grad

    def hogwild(self, X, y: np.ndarray, w: np.ndarray, lr: float, n_steps: int, seed: int,
                n_threads: int | None = None, l2: float = 0.0, lr_decay: float = 0.0,
                step_offset: int = 0) -> int:
        """Lock-free SGD on the rows ``X, y``, updating ``w`` in place (Hogwild).

        Each of ``n_threads`` threads (default: the model's) runs ``n_steps`` steps on rows
        it draws with replacement from its own seeded stream, with step size
        ``lr / (1 + lr_decay * (step_offset + k))`` at its step ``k``, on this model's
        objective with L2 coefficient ``l2``. See :mod:`gdcode.kernels.hogwild` (the
        module docstring of ``kernels/hogwild.pyx``) for the exact update. Returns the
        number of updates applied.
        """
        if not (isinstance(w, np.ndarray) and w.dtype == np.float64 and w.flags.c_contiguous
                and w.flags.writeable):
            raise ValueError("w must be a writable C-contiguous float64 array (Hogwild "
                             "updates it in place)")
        threads = self.n_threads if n_threads is None else int(n_threads)
        y = np.ascontiguousarray(y, dtype=np.float64)
        X = as_rows(X)
        n_classes = self.n_classes(w.size, X.shape[1])
        common = dict(n_threads=threads, l2=l2, lr_decay=lr_decay, step_offset=step_offset,
                      n_classes=n_classes if self.kernel_objective == "softmax" else 0)
        if isinstance(X, np.ndarray):
            return int(self._hogwild_dense(X, y, w, self.kernel_objective, lr, n_steps, seed, **common))
        return int(self._hogwild_csr(X.data, X.indices, X.indptr, y, w, self.kernel_objective, lr, n_steps,
                                     seed, **common))


def kernel_arguments(X, y, coef, w, grad):
    """``(X, y, coef, w)`` as the compiled kernels take them (:func:`as_rows`, contiguous float64
    vectors), after checking that ``grad`` is what they add into in place.

    Raises
    ------
    ValueError
        When ``grad`` is not a writable C-contiguous float64 array of ``w``'s shape.
    """
    if not (isinstance(grad, np.ndarray) and grad.dtype == np.float64
            and grad.flags.c_contiguous and grad.flags.writeable):
        raise ValueError("grad must be a writable C-contiguous float64 array (the kernels "
                         "add into it in place)")
    if grad.shape != np.shape(w):
        raise ValueError(f"grad has shape {grad.shape}, w {np.shape(w)}; they must match")
    return (as_rows(X), np.ascontiguousarray(y, dtype=np.float64), np.ascontiguousarray(coef, dtype=np.float64),
            np.ascontiguousarray(w, dtype=np.float64))


def as_rows(X):
    """``X`` as the kernels take it: a C-contiguous float32/float64 ndarray, or CSR; copied only
    when it is not already so (a row-strided view such as ``X[::2]`` is copied)."""
    if reference.issparse(X):  # scipy is imported only where something sparse exists
        import scipy.sparse as sp

        if X.format != "csr":
            X = X.tocsr()
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if X.indptr.dtype != X.indices.dtype:
            X = sp.csr_matrix((X.data, X.indices, X.indptr.astype(X.indices.dtype)),
                              shape=X.shape)
        return X
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows by columns), got shape {X.shape}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if not X.flags.c_contiguous:
        X = np.ascontiguousarray(X)
    return X


@MODELS.register("logistic")
class Logistic(LinearModel):
    """``logistic``: ``log(1 + exp(-y x.w))`` with labels +1/-1."""

    task, stem, kernel_objective = "binary", "logistic", "logistic"

    def test_metrics(self, X, y, w):
        if X.shape[0] == 0:
            return {}
        margin = np.asarray(X @ w)
        loss = float(np.mean(np.logaddexp(0.0, -y * margin)))
        return _binary_metrics(loss, margin, y)


@MODELS.register("least-squares")
class LeastSquares(LinearModel):
    """``least-squares``: ``(x.w - y)^2 / 2``.

    So ``f`` is ``(1/(2n)) sum (x.w - y)^2 + (lambda/2)||w||^2``.
    """

    task, stem, kernel_objective = "regression", "least_squares", "least-squares"

    def test_metrics(self, X, y, w):
        if X.shape[0] == 0:
            return {}
        r = np.asarray(X @ w) - y
        return {"test_loss": float(0.5 * np.mean(r * r)),
                "test_rmse": float(np.sqrt(np.mean(r * r)))}


@MODELS.register("hinge")
class Hinge(LinearModel):
    """``hinge``: ``max(0, 1 - y x.w)`` with labels +1/-1 (a linear SVM).

    The loss is not differentiable where ``y x.w = 1``; the kernels use the subgradient
    ``-y x`` where ``y x.w < 1`` and 0 elsewhere, the kink included.
    """

    task, stem, kernel_objective = "binary", "hinge", "hinge"

    def test_metrics(self, X, y, w):
        if X.shape[0] == 0:
            return {}
        margin = np.asarray(X @ w)
        loss = float(np.mean(np.maximum(0.0, 1.0 - y * margin)))
        return _binary_metrics(loss, margin, y)


@MODELS.register("softmax")
class Softmax(LinearModel):
    """``softmax``: ``-log softmax(W x)[y]`` with classes ``0..K-1`` (multinomial logistic).

    ``W`` is ``(K, n_cols)``, flattened row-major into the parameter vector; the L2 term
    covers all of ``W``. K comes from the parameter length (see the module docstring).
    """

    task, stem, kernel_objective = "multiclass", "softmax", "softmax"

    def n_params(self, n_cols: int, n_classes: int = 2) -> int:
        if n_classes < 2:
            raise ValueError(f"softmax needs a dataset with at least 2 classes, got {n_classes}")
        return n_classes * n_cols

    def n_classes(self, n_params: int, n_cols: int) -> int:
        if n_cols < 1 or n_params < n_cols or n_params % n_cols:
            raise ValueError(f"softmax parameters of length {n_params} do not form a "
                             f"(K, {n_cols}) matrix")
        return n_params // n_cols

    def _shaped(self, w, grad, n_cols):
        K = self.n_classes(w.size, n_cols)
        return w.reshape(K, n_cols), grad.reshape(K, n_cols)

    def test_metrics(self, X, y, w):
        if X.shape[0] == 0:
            return {}
        from gdcode.kernels.reference import class_labels, softmax_rows

        K = self.n_classes(w.size, X.shape[1])
        scores = np.asarray(X @ w.reshape(K, X.shape[1]).T, dtype=np.float64)
        labels = class_labels(np.asarray(y, dtype=np.float64), K)
        loss, _ = softmax_rows(scores, labels)
        return {"test_loss": float(np.mean(loss)), "test_accuracy": float(np.mean(np.argmax(scores, axis=1) == labels))}


#: hidden layer widths of ``mlp`` when ``--hidden`` is not given (scikit-learn's MLPClassifier default)
MLP_DEFAULT_HIDDEN = (100,)


def parse_hidden(hidden: str | int | Sequence[int] | None) -> tuple[int, ...]:
    """``--hidden``: ``"1024,1024"`` (or an int, or a sequence) as a tuple of widths >= 1.

    ``None`` is :data:`MLP_DEFAULT_HIDDEN`.

    Raises
    ------
    ValueError
        For anything else than one or more whole numbers >= 1.
    """
    if hidden is None:
        return MLP_DEFAULT_HIDDEN
    items: list[Any]
    if isinstance(hidden, str):
        items = [part.strip() for part in hidden.split(",")]
    elif isinstance(hidden, (int, np.integer)):
        items = [hidden]
    else:
        items = list(hidden)
    out = []
    for item in items:
        try:
            width = int(item)
        except (TypeError, ValueError):
            width = 0
        if isinstance(item, bool) or width < 1 or str(width) != str(item).strip():
            raise ValueError(f"hidden layer widths {hidden!r} must be whole numbers >= 1 separated by "
                             "commas, e.g. 1024,1024")
        out.append(width)
    if not out or len(out) >= reference.MLP_MAX_LAYERS:
        raise ValueError(f"hidden {hidden!r} must give 1 to {reference.MLP_MAX_LAYERS - 1} layer widths")
    return tuple(out)


@MODELS.register("mlp")
class MLP(Model):
    """``mlp``: a multilayer perceptron; softmax output on multiclass data, logistic on binary.

    Hidden layers of widths ``hidden`` apply ``activation``; the output layer is a softmax over
    the K classes of a multiclass dataset (cross-entropy, labels 0..K-1) or one logistic unit
    on a binary one (``log(1 + exp(-y s))``, labels +1/-1). The parameter vector holds, layer
    after layer, ``W_l`` of shape ``(d_l, d_{l-1})`` row-major then its bias ``b_l``
    (``d_0`` the columns, ``d_{L+1}`` the outputs; :func:`gdcode.kernels.reference.mlp_layout`).
    The run's L2 term covers every parameter, biases included.

    Float64 rows compute in float64, float32 rows in float32 (the parameters are converted per
    call into a preallocated float32 copy; the gradient is summed in float32 and added into
    the float64 one at the end: 1.9e-7 relative (norm) on 784-1024-1024-10 and 512 rows).
    Dense rows go through the fused BLAS kernel ``mlp_dense`` (:mod:`gdcode.kernels`)
    ``block_rows`` rows at a time, with a workspace allocated once for the newest network and
    row dtype and reused; CSR rows through its numpy twin.

    Parameters
    ----------
    compiled : bool, optional
        ``True`` insists on the compiled kernel, ``False`` uses the numpy twin, ``None``
        (default) takes the compiled one when it is built.
    n_threads : int
        BLAS threads of each call (default 1: one per MPI rank).
    hidden : str or sequence of int, optional
        Hidden layer widths, ``"1024,1024"`` (``--hidden``); default one layer of 100.
    activation : {"relu", "tanh"}
        Of the hidden layers (``--activation``).
    block_rows : int
        Rows per fused pass of the compiled kernel (its workspace holds that many).
    """

    task = "multiclass"
    sparse_steps = False

    def __init__(self, compiled: bool | None = None, n_threads: int = 1,
                 hidden: str | Sequence[int] | None = None, activation: str = "relu",
                 block_rows: int = 256) -> None:
        if int(n_threads) < 1:
            raise ValueError(f"n_threads must be at least 1, got {n_threads}")
        if activation not in reference.MLP_ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of: {', '.join(reference.MLP_ACTIVATIONS)}")
        if int(block_rows) < 1:
            raise ValueError(f"block_rows must be at least 1, got {block_rows}")
        self.hidden = parse_hidden(hidden)
        self.activation = activation
        self.n_threads = int(n_threads)
        self.block_rows = int(block_rows)
        self._kernel = kernels.get("mlp_dense", compiled=compiled)
        self._twin = reference.mlp_dense
        self._work: dict[tuple, np.ndarray] = {}
        self._blas: Any = None

    @property
    def tasks(self) -> tuple[str, ...]:
        return ("binary", "multiclass")

    def sizes(self, n_cols: int, n_outputs: int) -> tuple[int, ...]:
        """The layer widths ``(n_cols, *hidden, n_outputs)``."""
        return (int(n_cols), *self.hidden, int(n_outputs))

    def n_params(self, n_cols: int, n_classes: int = 2) -> int:
        return reference.mlp_n_params(self.sizes(n_cols, self._outputs(n_classes)))

    def _outputs(self, n_classes: int) -> int:
        if self.task == "binary":
            return 1
        if n_classes < 2:
            raise ValueError(f"mlp on a multiclass dataset needs at least 2 classes, got {n_classes}")
        return int(n_classes)

    def n_classes(self, n_params: int, n_cols: int) -> int:
        """The outputs K of the network with ``n_params`` parameters on ``n_cols`` columns (1: logistic)."""
        body = reference.mlp_n_params(self.sizes(n_cols, 1)) - (self.hidden[-1] + 1)
        rest = n_params - body
        if n_cols < 1 or rest < self.hidden[-1] + 1 or rest % (self.hidden[-1] + 1):
            raise ValueError(f"mlp parameters of length {n_params} do not fit the network "
                             f"{n_cols}-{'-'.join(map(str, self.hidden))}-K")
        return rest // (self.hidden[-1] + 1)

    def initial_point(self, n_cols: int, n_classes: int, seed: int) -> np.ndarray:
        """The seeded initial parameters: He for relu layers, Xavier/Glorot for tanh layers and the output.

        Weights of a hidden layer are ``N(0, 2/fan_in)`` (relu, He et al. 2015) or
        ``N(0, 2/(fan_in + fan_out))`` (tanh, Glorot and Bengio 2010); the output layer's are
        Glorot's; biases are 0. The stream is ``numpy.random.default_rng([seed, 0x4D4C50])``.
        """
        sizes = self.sizes(n_cols, self._outputs(n_classes))
        rng = np.random.default_rng([seed, 0x4D4C50])
        w = np.zeros(reference.mlp_n_params(sizes))
        layout = reference.mlp_layout(sizes)
        for l, (ow, _, d_out, d_in) in enumerate(layout):
            hidden = l < len(layout) - 1
            var = 2.0 / d_in if hidden and self.activation == "relu" else 2.0 / (d_in + d_out)
            w[ow:ow + d_out * d_in] = np.sqrt(var) * rng.standard_normal(d_out * d_in)
        return w

    def _sizes_of(self, w: np.ndarray, n_cols: int) -> tuple[int, ...]:
        return self.sizes(n_cols, self.n_classes(w.size, n_cols))

    def _limit_blas(self) -> Any:
        if self._blas is None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()
        return self._blas.limit(limits=self.n_threads, user_api="blas")

    def workspace(self, sizes: tuple[int, ...], dtype: Any) -> np.ndarray:
        """The compiled kernel's workspace for ``sizes`` and rows of ``dtype``, allocated once."""
        key = (sizes, np.dtype(dtype).name)
        work = self._work.get(key)
        if work is None:
            work = np.empty(reference.mlp_work_size(sizes, self.block_rows, dtype), dtype=dtype)
            self._work = {key: work}  # one network per model: keep only the newest
        return work

    def loss_grad_sum(self, X, y, coef, w, grad):
        if X.shape[0] == 0:
            return 0.0
        X, y, coef, w = kernel_arguments(X, y, coef, w, grad)
        sizes = self._sizes_of(w, X.shape[1])
        with self._limit_blas():
            if isinstance(X, np.ndarray):
                return float(self._kernel(X, y, coef, w, grad, sizes, self.activation,
                                          self.workspace(sizes, X.dtype), n_threads=self.n_threads))
            return float(self._twin(X, y, coef, w, grad, sizes, self.activation))

    #: rows per forward pass of :meth:`scores` (bounds the memory of an evaluation)
    SCORE_ROWS = 4096

    def scores(self, X, w: np.ndarray) -> np.ndarray:
        """The network's outputs (before the softmax or logistic) on rows ``X``, float64 ``(n, K)``.

        A forward pass only, :attr:`SCORE_ROWS` rows at a time.
        """
        X = as_rows(X)
        w = np.asarray(w, dtype=np.float64)
        sizes = self._sizes_of(w, X.shape[1])
        out = np.empty((X.shape[0], sizes[-1]))
        with self._limit_blas():
            for lo in range(0, X.shape[0], self.SCORE_ROWS):
                hi = min(lo + self.SCORE_ROWS, X.shape[0])
                out[lo:hi] = reference.mlp_forward(X[lo:hi], w, sizes, self.activation)[-1]
        return out

    def _mean_loss(self, scores: np.ndarray, y) -> float:
        y = np.asarray(y, dtype=np.float64)
        if scores.shape[1] == 1:
            return float(np.mean(np.logaddexp(0.0, -y * scores[:, 0])))
        loss, _ = reference.softmax_rows(scores, reference.class_labels(y, scores.shape[1]))
        return float(np.mean(loss))

    def objective(self, X, y, w, l2):
        """``f(w)`` from a forward pass only (the coordinator's ``train_loss``: no gradient is formed)."""
        data = self._mean_loss(self.scores(X, w), y) if X.shape[0] else 0.0
        return data + 0.5 * l2 * float(np.dot(w, w))

    def test_metrics(self, X, y, w):
        if X.shape[0] == 0:
            return {}
        scores = self.scores(X, w)
        y = np.asarray(y, dtype=np.float64)
        loss = self._mean_loss(scores, y)
        if scores.shape[1] == 1:
            return _binary_metrics(loss, scores[:, 0], y)
        labels = reference.class_labels(y, scores.shape[1])
        return {"test_loss": loss, "test_accuracy": float(np.mean(np.argmax(scores, axis=1) == labels))}


def _binary_metrics(loss: float, margin: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Test loss, accuracy (a margin of 0 predicts +1) and AUC of a binary model."""
    acc = float(np.mean(np.where(margin >= 0, 1.0, -1.0) == y))
    out = {"test_loss": loss, "test_accuracy": acc}
    auc = binary_auc(y > 0, margin)
    if auc is not None:
        out["test_auc"] = auc
    return out


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve, ties counted half (the Mann-Whitney statistic); None with one class only.

    Parameters
    ----------
    positive : numpy.ndarray of bool
        Which rows are of the positive class.
    score : numpy.ndarray
        The model's score of each row (higher: more likely positive).

    Returns
    -------
    float or None
        The area under the ROC curve, as ``sklearn.metrics.roc_auc_score`` gives it (a tie
        counts half); NaN when a score is NaN; None when every row is of one class (the AUC is
        undefined then).
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    score = np.asarray(score, dtype=np.float64)
    if np.isnan(score).any():
        return float("nan")
    # the Mann-Whitney statistic from tie-averaged ranks, in numpy: scikit-learn's roc_auc_score
    # gives the same area (the tests hold them to 1e-12), but importing sklearn.metrics costs rank 0
    # 0.9 s of every run's start-up, on the path every rank waits on
    order = np.argsort(score, kind="stable")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    ranks = np.empty(score.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based, ties averaged
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def names() -> list[str]:
    """The model names (built-ins and entry-point plug-ins), sorted."""
    return MODELS.names()


def model_options(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor options of the model ``name`` that ``values`` (the run options) hold, by name.

    As :func:`gdcode.optim.rule_options` for update rules: ``model_options("mlp", {"hidden":
    "64,64", "activation": "tanh", "lr": 0.1})`` is ``{"hidden": "64,64", "activation":
    "tanh"}``; a value ``None`` (an option not given that has no default) is left out.
    """
    return {key: values[key] for key in MODELS.options(name) if values.get(key) is not None}


def get(name: str, compiled: bool | None = None, n_threads: int = 1, **options: Any) -> Model:
    """The model ``name`` (a name or ``MODULE:CLASS``), built with the kernel choices it takes.

    ``compiled`` and ``n_threads`` go to a constructor that takes them; a model whose
    constructor takes neither (a plain-numpy plug-in) is built without them, and then
    ``compiled=True`` or ``n_threads > 1`` are refused. ``options`` are the model's own keyword
    options (``--model-options``), checked against its constructor.

    Raises
    ------
    ValueError
        For an unknown model, a plug-in that fails to import or is no :class:`Model`, or
        kernel choices the model cannot honour.
    """
    factory = MODELS.get(name)
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - a factory without a signature
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {}
    for key, value, harmless in (("compiled", compiled, (None, False)), ("n_threads", n_threads, (1,))):
        if takes_any or key in params:
            kwargs[key] = value
        elif value not in harmless:
            raise ValueError(f"model {name!r} takes no {key}, so it cannot honour {key}={value!r}")
    own = [p for p in params if p not in ("self", "compiled", "n_threads")
           and params[p].kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(own)) if not takes_any else []
    if unknown:
        raise ValueError(f"model {name!r} takes no option {', '.join(unknown)}; it takes: {', '.join(own) or 'none'}")
    model = factory(**kwargs, **options)
    if not isinstance(model, Model):
        raise ValueError(f"the model {name!r} built a {type(model).__name__}, not a gdcode.models.Model")
    return model
