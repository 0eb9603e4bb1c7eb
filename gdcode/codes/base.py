"""The gradient-code interface (docs/codes.md).

Worker ``i`` sends ``y_i = sum_j B[i, j] g_j``, with ``g_j`` the gradient sum of partition ``j``;
the coordinator forms ``sum_i a_i y_i`` with the weights ``a = code.decode(responders)``.

Multi-message codes (``n_messages > 1``, the partial schemes) split ``B`` into
``message_matrices``: for message ``k`` worker ``i`` sends ``sum_j M_k[i, j] g_j``, their
``decode`` takes ``(worker, message)`` pairs and returns weights of shape
``(n_messages, n_workers)``; the gradient sum is ``sum_k sum_i a[k, i] y_{i,k}``.

For the simulator a code also tells when it first decodes over many draws of arrival times,
:meth:`GradientCode.decode_times`: the base class replays ``decode`` per draw (exact, slow),
and a code overrides it with a vectorised rule, usually built from :func:`kth_arrival` (the
k-th reply) and :func:`coverage_time` (every partition received from one of its holders).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class GradientCode:
    """Base class of every code: an encoding matrix and a decoder.

    Subclasses set :attr:`B` (shape ``(n_workers, n_partitions)``, float64) and
    :attr:`exact`, and implement :meth:`decode`. ``decode`` must be consistent on prefixes:
    once it returns weights for some arrival sequence, a longer sequence with the same start
    returns the same weights (the extra arrivals are ignored).

    Attributes
    ----------
    n_workers : int
        W, the number of workers.
    n_stragglers : int
        S, the stragglers the code is built for.
    exact : bool
        ``True`` when a decode returns weights with ``a @ B == 1`` (the exact gradient sum)
        for every set of ``W - S`` responders.
    B : numpy.ndarray
        The encoding matrix.
    """

    name: str = ""
    exact: bool = True
    #: number of messages each worker sends per iteration (2 for the partial schemes)
    n_messages: int = 1
    #: True when every decode puts weight 1 on rows with disjoint supports that cover every
    #: partition once, so ``a.B = 1`` holds exactly in floating point (no numerical check needed)
    exact_by_construction: bool = False

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0) -> None:
        check_workers_stragglers(n_workers, n_stragglers)
        self.n_workers = int(n_workers)
        self.n_stragglers = int(n_stragglers)
        self.seed = int(seed)
        self.B = np.eye(self.n_workers)
        #: the keyword options it was built with (set by :func:`gdcode.codes.build`)
        self.options: dict = {}
        self._partition_sizes: np.ndarray | None = None

    @property
    def n_partitions(self) -> int:
        return int(self.B.shape[1])

    #: decoding weights kept per set of rows (:meth:`lstsq_weights`); the cache is emptied when full
    WEIGHTS_CACHE = 4096

    def lstsq_weights(self, rows: Sequence[int]) -> np.ndarray:
        """:func:`lstsq_weights` of this code's ``B`` on ``rows``, solved once per set of rows.

        The coordinator decodes every iteration from a set of responders that recurs (at W = 3,
        S = 1 there are three); the solve took 0.2 ms of each cyclic-mds iteration. The rows are
        taken in sorted order, so the weights do not depend on the order the replies came in.
        """
        key = tuple(sorted(int(r) for r in rows))
        cache = self.__dict__.setdefault("_weights_cache", {})
        weights = cache.get(key)
        if weights is None:
            if len(cache) >= self.WEIGHTS_CACHE:
                cache.clear()
            weights = cache[key] = lstsq_weights(self.B, key)
        return weights.copy()

    @property
    def straggler_tolerance(self) -> int:
        """Stragglers every decode survives: S, except for codes that wait for everyone (0)."""
        return self.n_stragglers

    @property
    def message_matrices(self) -> list[np.ndarray]:
        """One ``(n_workers, n_partitions)`` matrix per message; ``[B]`` for one message."""
        return [self.B]

    def load(self) -> np.ndarray:
        """Fraction of the partitions each worker holds, shape ``(n_workers,)``."""
        return np.count_nonzero(self.B, axis=1) / self.n_partitions

    def partitions_of(self, worker: int) -> np.ndarray:
        """Indices of the partitions worker ``worker`` (0-based) holds."""
        return np.flatnonzero(self.B[worker])

    def send_order(self) -> np.ndarray:
        """The order in which the coordinator sends each iteration's model (0-based workers).

        Workers that hold the same partitions (the same nonzero pattern in their rows of every
        message matrix, whatever the coefficients, as in a group of ``frc``) are taken to stand
        in for each other, so one of each comes first, then a second of each, and so on; the
        others keep their order. When the sends, or the ranks' start on them, take time (ranks
        sharing few cores, one link), every group then has a member starting early instead of
        one whole group starting last.
        """
        support = np.concatenate([m != 0 for m in self.message_matrices], axis=1)
        _, label = np.unique(support, axis=0, return_inverse=True)
        label = label.reshape(-1)
        copy = np.zeros(self.n_workers, dtype=np.int64)  # how many earlier workers share the support
        seen: dict[int, int] = {}
        for w, lab in enumerate(label):
            copy[w] = seen.get(int(lab), 0)
            seen[int(lab)] = copy[w] + 1
        return np.argsort(copy, kind="stable")

    def decode(self, responders: Sequence) -> np.ndarray | None:
        """Decoding weights from the workers that replied, in arrival order.

        Parameters
        ----------
        responders : sequence of int
            0-based worker indices, in the order their replies arrived (repeats are
            ignored). Multi-message codes take ``(worker, message)`` pairs instead.

        Returns
        -------
        numpy.ndarray or None
            Weights ``a`` of length ``n_workers`` (zero off the responders), or ``None`` while
            the code cannot decode yet. Multi-message codes return shape
            ``(n_messages, n_workers)``.
        """
        raise NotImplementedError

    def combined(self, weights: np.ndarray) -> np.ndarray:
        """The weight each partition gets in the decoded sum: ``sum_k a[k] @ M_k``.

        Equal to ``a @ B`` for a one-message code; all ones for an exact decode.
        """
        w = np.asarray(weights, dtype=float).reshape(self.n_messages, self.n_workers)
        return sum(w[k] @ m for k, m in enumerate(self.message_matrices))

    def residual(self, weights: np.ndarray) -> float:
        """``max_j |(a.B)_j - 1|``: 0 for an exact decode (up to rounding)."""
        return float(np.max(np.abs(self.combined(weights) - 1.0)))

    def facts(self) -> dict:
        """Construction facts worth reporting beside the diagnostics (none by default)."""
        return {}

    @property
    def partition_sizes(self) -> np.ndarray:
        """Rows in each partition, as bound by :meth:`bind_partition_sizes` (all ones until then)."""
        sizes = getattr(self, "_partition_sizes", None)
        return np.ones(self.n_partitions) if sizes is None else sizes

    def bind_partition_sizes(self, sizes: Sequence[float] | np.ndarray) -> None:
        """Tell the code how many rows each of its partitions holds.

        The runtime calls it once the dataset is known; a decode that weights partitions by
        their size (``ignore``) uses them, the others ignore them.

        Parameters
        ----------
        sizes : sequence of float
            ``n_partitions`` positive numbers.

        Raises
        ------
        ValueError
            Unless there are ``n_partitions`` finite positive sizes.
        """
        arr = np.asarray(sizes, dtype=float)
        if arr.shape != (self.n_partitions,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            got = arr.tolist() if arr.size <= 8 else f"shape {arr.shape}"
            raise ValueError(f"partition_sizes must be {self.n_partitions} finite positive numbers, got {got}")
        self._partition_sizes = arr

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """When the code first decodes in each draw of arrival times.

        The base class replays :meth:`decode` per draw on the arrivals in time order
        (:func:`decode_time`, a bisection over the prefixes): exact for any code, slow. A code
        overrides it with a vectorised rule that gives the same times.

        Parameters
        ----------
        arrivals : numpy.ndarray
            Shape ``(draws, n_workers, n_messages)``: when each message of each worker
            arrives (``inf`` for one that never does). A worker's messages arrive in order.

        Returns
        -------
        numpy.ndarray
            Shape ``(draws,)``: the arrival time of the message that made the decode
            possible, ``inf`` in a draw that never decodes.
        """
        arrivals = np.asarray(arrivals, dtype=float)
        multi = self.n_messages > 1
        return np.array([decode_time(self, a if multi else a[:, 0])[0] for a in arrivals])

    def exponential_order_mean(self, shift: float, mean: float) -> float | None:
        """The mean decode time when every worker's message arrives at ``shift + E``, ``E``
        exponential of mean ``mean``, independently; None when there is no closed form (default).

        Used by :func:`gdcode.simulate.closed_form_mean` (one-message codes of equal load).
        """
        return None

    #: whether :meth:`decode_now` gives weights from any non-empty set of replies (the codes an
    #: adaptive deadline, ``--wait``, can stop: ignore and the approximate codes)
    decodes_any_set = False
    #: the coordinator adds every partition's last stored gradient to the fresh replies (``stale``)
    keeps_stale = False
    #: workers send minibatch gradients one after another until a newer model comes, and the
    #: coordinator steps once it has ``k`` of them in total (``kbatch``)
    repeats = False

    def decode_now(self, responders: Sequence) -> np.ndarray | None:
        """Weights from exactly these responders, the code's stopping rule aside.

        For :attr:`decodes_any_set` codes, the best weights these replies allow (an adaptive
        deadline decided the iteration is over); for the others, :meth:`decode` (None until the
        code can decode).
        """
        return self.decode(responders)

    def _arrivals(self, responders: Sequence[int]) -> list[int]:
        """The responders as checked worker indices without repeats, first arrival kept."""
        got = unique_in_order(responders)
        for r in got:
            if not 0 <= r < self.n_workers:
                raise ValueError(f"responder {r} is not a worker index 0..{self.n_workers - 1}")
        return got

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_workers={self.n_workers}, n_stragglers={self.n_stragglers})"


def check_workers_stragglers(n_workers: int, n_stragglers: int) -> None:
    """Raise ValueError unless ``W >= 1`` and ``0 <= S < W``."""
    if int(n_workers) != n_workers or n_workers < 1:
        raise ValueError(f"the number of workers W = {n_workers} must be a positive integer")
    if int(n_stragglers) != n_stragglers or not 0 <= n_stragglers < n_workers:
        raise ValueError(f"the number of stragglers S = {n_stragglers} must satisfy 0 <= S < W = {n_workers}")


def check_collect(collect: int | None, n_workers: int, n_stragglers: int) -> int:
    """The number of replies an approximate code waits for: ``collect`` or ``W - S``."""
    if collect is None:
        return n_workers - n_stragglers
    if int(collect) != collect or not 1 <= collect <= n_workers:
        raise ValueError(f"collect = {collect} replies must be an integer between 1 and W = {n_workers}")
    return int(collect)


def unique_in_order(responders: Sequence[int]) -> list[int]:
    """The responders without repeats, first arrival kept."""
    seen: set[int] = set()
    out = []
    for r in responders:
        if r not in seen:
            seen.add(r)
            out.append(int(r))
    return out


def lstsq_weights(B: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """Least-squares weights on ``rows``: ``argmin_a ||a @ B[rows] - 1||``, zero elsewhere.

    Solved by ``numpy.linalg.lstsq`` (SVD, numpy's default cut-off for small singular
    values), so a rank-deficient set of rows gets the minimum-norm weights.
    """
    a = np.zeros(B.shape[0])
    rows = list(rows)
    if rows:
        a[rows] = np.linalg.lstsq(B[rows].T, np.ones(B.shape[1]), rcond=None)[0]
    return a


def uniform_sample_moments(B: np.ndarray, weight: float, collect: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``w = a @ B`` when ``a`` is ``weight`` on a uniformly random set of
    ``collect`` of the ``W`` rows and 0 elsewhere (sampling without replacement).

    ``E w = weight q 1^T B`` and ``Cov w = weight^2 q(1-q) W/(W-1) B^T (I - J/W) B`` with
    ``q = collect/W``.
    """
    W = B.shape[0]
    q = collect / W
    mean = weight * q * B.sum(axis=0)
    if W == 1:
        return mean, np.zeros((B.shape[1], B.shape[1]))
    centred = B - B.mean(axis=0)
    return mean, weight * weight * q * (1 - q) * W / (W - 1) * (centred.T @ centred)


def first_per_group(arrivals: Sequence[int], group_of: np.ndarray, n_groups: int) -> dict[int, int]:
    """The first worker of each group to arrive, as ``{group: worker}``, in arrival order."""
    first: dict[int, int] = {}
    for r in arrivals:
        g = int(group_of[r])
        if g not in first:
            first[g] = r
            if len(first) == n_groups:
                break
    return first


def kth_arrival(arrivals: np.ndarray, k: int) -> np.ndarray:
    """The k-th smallest (1-based) arrival time of each draw.

    Parameters
    ----------
    arrivals : numpy.ndarray
        Shape ``(draws, W)``.
    k : int
        ``1 <= k <= W``.

    Returns
    -------
    numpy.ndarray
        Shape ``(draws,)``: when a code that decodes from any k replies decodes.
    """
    arrivals = np.asarray(arrivals, dtype=float)
    out = np.empty(arrivals.shape[0])
    for rows in _row_chunks(*arrivals.shape):
        out[rows] = np.partition(arrivals[rows], k - 1, axis=1)[:, k - 1]
    return out


def coverage_time(arrivals: np.ndarray, B: np.ndarray) -> np.ndarray:
    """When every partition has arrived from at least one worker holding it.

    ``max_j min_{i: B_ij != 0} T_i`` per draw: the decode time of a code that needs one reply
    per partition (``frc``, ``bcc``). Partitions held by the same workers share one minimum,
    so a code with groups (frc's W/(S+1)) costs one pass over each group's columns.

    Parameters
    ----------
    arrivals : numpy.ndarray
        Shape ``(draws, W)``.
    B : numpy.ndarray
        The ``(W, n_partitions)`` matrix whose non-zero entries say who holds what.

    Returns
    -------
    numpy.ndarray
        Shape ``(draws,)``; ``inf`` for a draw in which some partition never arrives.
    """
    arrivals = np.asarray(arrivals, dtype=float)
    n = arrivals.shape[0]
    holder_sets = _distinct_columns(np.asarray(B) != 0).T  # one row per distinct set of holders
    if holder_sets.shape[0] == 0:
        return np.full(n, -np.inf)
    sizes = holder_sets.sum(axis=1)
    if np.any(sizes == 0):  # a partition nobody holds never arrives
        return np.full(n, np.inf)
    # holders[m, s]: the m-th holder of set s, a smaller set's first holder repeated (which
    # leaves its minimum alone), so that each set's minimum is an elementwise one over rows
    holders = np.empty((int(sizes.max()), holder_sets.shape[0]), dtype=np.intp)
    for s, members in enumerate(holder_sets):
        cols = np.flatnonzero(members)
        holders[:, s] = cols[0]
        holders[:cols.size, s] = cols
    out = np.empty(n)
    for rows in _row_chunks(n, holders.size):
        chunk = arrivals[rows][:, holders.ravel()].reshape(-1, *holders.shape)
        out[rows] = chunk.min(axis=1).max(axis=1)
    return out


def _distinct_columns(mask: np.ndarray) -> np.ndarray:
    """The distinct columns of a boolean matrix, in the order of their first appearance.

    Compared as packed bits: ``numpy.unique(mask, axis=1)`` takes 0.13 s on frc's 1000 x 1000
    matrix, this 5 ms.
    """
    if mask.shape[1] == 0:
        return mask
    if mask.shape[0] == 0:  # every column is the same empty one
        return mask[:, :1]
    packed = np.ascontiguousarray(np.packbits(mask, axis=0).T)  # a row of bytes per column
    _, first = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(), return_index=True)
    return mask[:, np.sort(first)]


#: bytes of the arrival table that kth_arrival and coverage_time copy at a time: a chunk of
#: rows stays in the cache, and the whole table (160 MB at W = 1000 and 20 000 draws) is
#: never copied
CHUNK_BYTES = 4 << 20


def _row_chunks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Slices of the rows of a float64 table of ``n_rows`` x ``n_cols``, ``CHUNK_BYTES`` each."""
    step = max(1, CHUNK_BYTES // (8 * max(1, n_cols)))
    for lo in range(0, n_rows, step):
        yield slice(lo, min(lo + step, n_rows))


def decode_time(code: GradientCode, arrivals: np.ndarray) -> tuple[float, list]:
    """When ``code`` first decodes, and the responders it decoded from.

    Parameters
    ----------
    code : GradientCode
        The code (single- or multi-message).
    arrivals : numpy.ndarray
        Arrival time of each worker's message: shape ``(n_workers,)`` for a single-message
        code, ``(n_workers, n_messages)`` otherwise; ``inf`` for a message that never comes.

    Returns
    -------
    time : float
        Arrival time of the reply that made the decode possible (``inf`` if it never does).
    responders : list
        The responders in arrival order up to that reply.

    Notes
    -----
    A code's ``decode`` is consistent on prefixes (once it decodes, longer arrival sequences
    decode too), so the shortest decodable prefix is found by bisection: about
    ``log2(W * n_messages)`` calls of ``decode`` instead of up to ``W * n_messages``.
    """
    arrivals = np.asarray(arrivals, dtype=float)
    multi = code.n_messages > 1
    if not multi:
        arrivals = arrivals.reshape(-1, 1)
    W, M = arrivals.shape
    order = np.argsort(arrivals, axis=None, kind="stable")
    order = order[np.isfinite(arrivals.ravel()[order])]
    items = [divmod(int(flat), M) for flat in order]
    responders = [(w, k) if multi else w for w, k in items]
    if not responders or code.decode(responders) is None:
        return float("inf"), responders
    lo, hi = 0, len(responders)  # decode fails on the first lo replies and works on the first hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if code.decode(responders[:mid]) is None:
            lo = mid
        else:
            hi = mid
    w, k = items[hi - 1]
    return float(arrivals[w, k]), responders[:hi]


def harmonic(m: int) -> float:
    """The m-th harmonic number ``H_m = 1 + 1/2 + ... + 1/m`` (``H_0 = 0``)."""
    return float(np.sum(1.0 / np.arange(1, m + 1))) if m > 0 else 0.0
