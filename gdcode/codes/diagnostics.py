"""Decode diagnostics of a gradient code over its straggler patterns.

A *straggler pattern* is a set of S workers whose reply (for the partial schemes: whose
coded second message) never comes; the other workers reply in a random order drawn from the
seed. Every pattern is checked when there are at most :data:`MAX_PATTERNS` of them;
otherwise the W cyclic bursts of S consecutive workers (the worst case of the cyclic codes)
plus seeded random patterns, :data:`MAX_PATTERNS` in all.

>>> from gdcode import codes
>>> d = codes.diagnose(codes.build("frc", n_workers=6, n_stragglers=1))
>>> d.worst_residual, d.patterns_checked
(0.0, 6)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np

from gdcode.codes.base import GradientCode

#: straggler patterns checked at most (all of them when there are no more)
MAX_PATTERNS = 10_000
#: an exact code whose worst residual is above this is refused for exact use
EXACT_RESIDUAL_LIMIT = 1e-6
#: patterns on which the number of replies needed to decode is measured
REPLY_COUNT_PATTERNS = 500
#: length of the random partition gradients used for the float32 error
FLOAT32_DIM = 64


@dataclasses.dataclass
class Diagnosis:
    """What :func:`diagnose` found; :meth:`as_dict` is the ``gdcode codes --json`` object."""

    name: str
    n_workers: int
    n_stragglers: int
    straggler_tolerance: int
    n_partitions: int
    n_messages: int
    exact: bool
    options: dict
    facts: dict
    load: list[float]
    patterns_checked: int
    patterns_total: int
    all_patterns: bool
    undecoded_patterns: int
    worst_residual: float
    mean_residual: float
    mean_rms_error: float
    worst_condition: float
    max_weight: float
    float32_error: float
    replies_to_decode: dict
    usable_for_exact: bool
    refusal: str | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (a non-finite number becomes ``None``)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


def straggler_patterns(n_workers: int, n_stragglers: int, max_patterns: int = MAX_PATTERNS,
                       seed: int = 0) -> tuple[np.ndarray, int]:
    """The straggler sets to check, as a ``(K, S)`` int array, and how many sets exist.

    All ``C(W, S)`` sets when there are at most ``max_patterns``; otherwise the W cyclic
    bursts ``{i, ..., i+S-1}`` and distinct seeded random sets, ``max_patterns`` in all.
    """
    W, S = n_workers, n_stragglers
    total = math.comb(W, S)
    if total <= max_patterns:
        return np.array(list(itertools.combinations(range(W), S)), dtype=int).reshape(total, S), total
    rng = np.random.default_rng(seed)
    bursts = list(dict.fromkeys(tuple(sorted((i + np.arange(S)) % W)) for i in range(W)))
    bursts = bursts[:max_patterns]
    chosen = set(bursts)
    while len(chosen) < max_patterns:
        draw = np.sort(rng.random((max_patterns, W)).argsort(axis=1)[:, :S], axis=1)
        for row in map(tuple, draw):
            chosen.add(row)
            if len(chosen) == max_patterns:
                break
    rest = sorted(chosen - set(bursts))
    return np.array(bursts + rest, dtype=int), total


def arrival_sequences(code: GradientCode, patterns: np.ndarray, seed: int = 0) -> list[list]:
    """One arrival sequence per straggler pattern, in the form ``code.decode`` takes.

    The non-stragglers arrive in a seeded random order. For a two-message code every
    worker's first message arrives (in random order), then the second messages of the
    non-stragglers.
    """
    W = code.n_workers
    rng = np.random.default_rng(seed + 1)
    K = patterns.shape[0]
    alive = np.ones((K, W), dtype=bool)
    if patterns.size:
        alive[np.repeat(np.arange(K), patterns.shape[1]), patterns.ravel()] = False
    order = rng.random((K, W)).argsort(axis=1)
    seqs: list[list] = []
    for k in range(K):
        responders = [int(i) for i in order[k] if alive[k, i]]
        if code.n_messages == 1:
            seqs.append(responders)
        else:
            first = [(int(i), m) for m in range(code.n_messages - 1) for i in rng.permutation(W)]
            seqs.append(first + [(i, code.n_messages - 1) for i in responders])
    return seqs


def _replies_needed(code: GradientCode, seq: list) -> int:
    """The shortest prefix of ``seq`` that decodes (``decode`` is consistent on prefixes)."""
    lo, hi = 0, len(seq)
    while lo < hi:
        mid = (lo + hi) // 2
        if code.decode(seq[:mid]) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _condition(rows: np.ndarray) -> float:
    """Condition number of the rows a decode used, as a least-squares solve sees them.

    The ratio of the largest singular value to the smallest one above numpy lstsq's cut-off
    ``max(m, n) * eps * s_max``; 1.0 for no rows.
    """
    if rows.size == 0:
        return 1.0
    s = np.linalg.svd(rows, compute_uv=False)
    kept = s[s > max(rows.shape) * np.finfo(float).eps * s[0]]
    return float(kept[0] / kept[-1]) if kept.size else 1.0


def diagnose(code: GradientCode, max_patterns: int = MAX_PATTERNS, seed: int = 0) -> Diagnosis:
    """Decode ``code`` under its straggler patterns and report how well it decodes.

    Parameters
    ----------
    code : GradientCode
        A built code (``gdcode.codes.build``).
    max_patterns : int
        Straggler patterns checked at most (all of them when there are no more).
    seed : int
        Seed of the sampled patterns, the arrival orders and the random gradients.

    Returns
    -------
    Diagnosis
        ``worst_residual`` is ``max |a.B - 1|`` over the patterns that decoded (and
        ``mean_residual`` its mean); ``mean_rms_error`` the mean of ``||a.B - 1|| / sqrt(k)``,
        the typical per-partition weight error of an approximate code;
        ``worst_condition`` the largest condition number of the rows a decode used
        (:func:`_condition`); ``max_weight`` the largest ``|a_i|``; ``float32_error`` the
        largest ``||sum_i a_i (y32_i - y_i)|| / ||sum_j g_j||`` with ``g_j`` seeded standard
        normal partition gradients of length 64 and ``y32`` the workers' messages rounded to
        float32; ``replies_to_decode`` the fewest, mean and most replies (messages, for a
        two-message code) after which ``decode`` returned, over up to 500 patterns.
    """
    patterns, total = straggler_patterns(code.n_workers, code.straggler_tolerance, max_patterns, seed)
    seqs = arrival_sequences(code, patterns, seed)
    mats = code.message_matrices
    G = np.random.default_rng(seed + 2).standard_normal((code.n_partitions, FLOAT32_DIM))
    exact_msgs = [m @ G for m in mats]
    rounding = np.stack([y.astype(np.float32).astype(float) - y for y in exact_msgs])
    g_norm = float(np.linalg.norm(G.sum(axis=0))) or 1.0
    all_rows = np.concatenate(mats, axis=0)

    residuals, rms = [], []
    worst_cond = max_weight = f32 = 0.0
    undecoded = 0
    replies = []
    for k, seq in enumerate(seqs):
        a = code.decode(seq)
        if a is None:
            undecoded += 1
            continue
        a = np.asarray(a, dtype=float).reshape(code.n_messages, code.n_workers)
        gap = code.combined(a) - 1.0
        residuals.append(float(np.max(np.abs(gap))))
        rms.append(float(np.sqrt(np.mean(gap ** 2))))
        used = np.flatnonzero(a.ravel())
        worst_cond = max(worst_cond, _condition(all_rows[used]))
        max_weight = max(max_weight, float(np.max(np.abs(a))))
        err = np.einsum("kw,kwd->d", a, rounding)
        f32 = max(f32, float(np.linalg.norm(err)) / g_norm)
        if k < REPLY_COUNT_PATTERNS:
            replies.append(_replies_needed(code, seq))

    worst = max(residuals) if residuals else float("nan")
    if code.exact and undecoded:
        worst = float("inf")
    refusal = _refusal(code, worst, len(seqs), undecoded) if code.exact else None
    return Diagnosis(
        name=code.name, n_workers=code.n_workers, n_stragglers=code.n_stragglers,
        straggler_tolerance=code.straggler_tolerance,
        n_partitions=code.n_partitions, n_messages=code.n_messages, exact=bool(code.exact),
        options=_plain(code.options), facts=_plain(code.facts()), load=[float(x) for x in code.load()],
        patterns_checked=len(seqs), patterns_total=total, all_patterns=len(seqs) == total,
        undecoded_patterns=undecoded, worst_residual=worst,
        mean_residual=float(np.mean(residuals)) if residuals else float("nan"),
        mean_rms_error=float(np.mean(rms)) if rms else float("nan"),
        worst_condition=worst_cond, max_weight=max_weight, float32_error=f32,
        replies_to_decode=({"min": int(min(replies)), "mean": float(np.mean(replies)),
                            "max": int(max(replies))} if replies else {}),
        usable_for_exact=bool(code.exact) and refusal is None, refusal=refusal)


def worst_residual(code: GradientCode, max_patterns: int = MAX_PATTERNS,
                   seed: int = 0) -> tuple[float, int, int]:
    """``(worst max|a.B - 1|, patterns checked, patterns that did not decode)``, decoding only."""
    patterns, _ = straggler_patterns(code.n_workers, code.straggler_tolerance, max_patterns, seed)
    worst, undecoded = 0.0, 0
    seqs = arrival_sequences(code, patterns, seed)
    for seq in seqs:
        a = code.decode(seq)
        if a is None:
            undecoded += 1
        else:
            worst = max(worst, code.residual(a))
    return worst, len(seqs), undecoded


_USABLE_CACHE: dict[str, str | None] = {}


def check_usable(code: GradientCode) -> None:
    """Refuse an exact code that does not decode accurately at its (W, S).

    The worst residual over the straggler patterns (as in :func:`diagnose`) must be at most
    1e-6 and every pattern must decode. The answer is cached per code (name, W, S and the
    encoding matrices), so repeated calls are free. Approximate codes, and exact codes whose
    decode only picks 0/1 rows (``exact_by_construction``: uncoded, frc, partial-frc, bcc),
    pass without a check.

    Raises
    ------
    ValueError
        Saying how large the residual is and suggesting ``cyclic-mds`` or ``frc``.
    """
    if not code.exact or code.exact_by_construction:
        return
    import hashlib

    h = hashlib.sha256(f"{code.name}|{code.n_workers}|{code.n_stragglers}".encode())
    for m in code.message_matrices:
        h.update(np.ascontiguousarray(m).tobytes())
    key = h.hexdigest()
    if key not in _USABLE_CACHE:
        worst, n, undecoded = worst_residual(code)
        _USABLE_CACHE[key] = _refusal(code, float("inf") if undecoded else worst, n, undecoded)
    if _USABLE_CACHE[key] is not None:
        raise ValueError(_USABLE_CACHE[key])


def _refusal(code: GradientCode, worst: float, n_patterns: int, undecoded: int) -> str | None:
    """The error message refusing ``code`` for exact use, or None when it is accurate enough."""
    if worst <= EXACT_RESIDUAL_LIMIT and not undecoded:
        return None
    where = f"code {code.name!r} at W = {code.n_workers}, S = {code.n_stragglers}"
    if undecoded:
        what = f"failed to decode {undecoded} of {n_patterns} straggler patterns"
    else:
        what = (f"has a worst decode residual max|a.B - 1| = {worst:.1e} over {n_patterns} "
                f"straggler patterns, above {EXACT_RESIDUAL_LIMIT:g}")
    other = "frc (needs S+1 dividing W; no rounding error) or fewer stragglers" \
        if code.name == "cyclic-mds" else \
        "cyclic-mds (better conditioned) or frc (needs S+1 dividing W; no rounding error)"
    return f"{where} {what}, so it is refused for exact use; use {other}"


def _plain(options: dict) -> dict:
    out = {}
    for key, value in options.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out
