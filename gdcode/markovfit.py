"""Fit the ``markov`` delay model to per-worker time series, and say which delay model fits best.

The model (:class:`gdcode.delays.Markov`): each worker is normal or slow, its states a
two-state chain (enter slow with probability ``p_enter``, leave with ``p_leave``, stationary
start); a time is ``(shift + Exp(mean))``, times ``factor`` while slow. Seen from the data the
states are hidden, so the fit maximises the likelihood of the hidden Markov model (the forward
algorithm, as a product of 2x2 matrices reduced pairwise over iterations, for all workers at
once); missing values carry no information and censored ones (a lower bound) their survival
probability. Confidence intervals come from the observed information (the numerical Hessian
of the log-likelihood in log / logit coordinates), transformed back, so they stay in range.

The likelihood-ratio test against the same two states without memory (an i.i.d. mixture:
``p_enter + p_leave = 1``) says whether slow spells last; the threshold that splits the
values into states is the one where a value is as likely slow as normal under the fit, and the
report gives the states, transitions and spells that threshold implies.

:func:`verdict` weighs this against the i.i.d. fits and the correlation statistics of
:mod:`gdcode.traces`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gdcode.traces import Series, slow_spells

__all__ = ["CONFIDENCE", "SHIFT_FLOOR", "fit_markov", "hmm_loglik", "log_emissions", "verdict", "wilson"]

#: the level of the confidence intervals
CONFIDENCE = 0.95
#: the fit has a shift when the smallest value is more than this fraction of the median
SHIFT_FLOOR = 0.05
_Z = 1.959963984540054  # the normal quantile of (1 + CONFIDENCE) / 2
_NAMES = ("mean", "factor", "p_enter", "p_leave")
_BOUND_F = (-8.0, 8.0)  # log(factor - 1)
_BOUND_P = (-12.0, 12.0)  # logit of a probability


def _expit(v: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * v))


def _exp(v: float) -> float:
    return math.exp(v) if v < 700 else math.inf


def _logit(p: float) -> float:
    p = min(max(p, 1e-5), 1 - 1e-5)
    return math.log(p / (1 - p))


def log_emissions(values: np.ndarray, censored: np.ndarray, mean: float, factor: float,
                  shift: float = 0.0) -> np.ndarray:
    """Log-likelihood of each value in each state, shape ``(T, W, 2)`` (normal, slow).

    A measured value ``x`` has density ``exp(-(x - shift)/(mean f)) / (mean f)`` for
    ``x >= shift`` (``f`` = 1 or ``factor``), a censored one probability
    ``exp(-max(x - shift, 0)/(mean f))``, a missing one (NaN) 1.
    """
    present = ~np.isnan(values)
    x = np.where(present, values, shift)
    scale = mean * np.array([1.0, factor])
    z = (x - shift)[..., None] * np.ones(2)
    obs = (present & ~censored)[..., None]
    cens = (present & censored)[..., None]
    dens = np.where(z >= -1e-12 * max(abs(shift), 1e-300), -np.log(scale) - np.maximum(z, 0.0) / scale, -np.inf)
    surv = -np.maximum(z, 0.0) / scale
    return np.where(obs, dens, np.where(cens, surv, 0.0))


def hmm_loglik(logE: np.ndarray, p_enter: float, p_leave: float) -> float:
    """Log-likelihood of a two-state hidden Markov chain per column with emissions ``logE``.

    ``logE`` has shape ``(T, W, 2)``; each column (worker) is an independent chain with
    transition matrix ``[[1 - p_enter, p_enter], [p_leave, 1 - p_leave]]`` started from its
    stationary distribution. The forward recursion ``pi diag(e_1) P diag(e_2) ... 1`` is
    evaluated as a pairwise (tree) product of the 2x2 matrices over iterations, each level
    rescaled, so the cost is a few numpy operations per doubling rather than per iteration.
    """
    T = logE.shape[0]
    mx = logE.max(axis=2)
    if not np.all(np.isfinite(mx)):  # a value no state can produce
        return -math.inf
    E = np.exp(logE - mx[..., None])
    total = float(mx.sum())
    pi = p_enter / (p_enter + p_leave)
    P = np.array([[1.0 - p_enter, p_enter], [p_leave, 1.0 - p_leave]])
    v0, v1 = (1.0 - pi) * E[0, :, 0], pi * E[0, :, 1]
    if T > 1:
        # M_t = P diag(e_t), kept as its four entries, each of shape (n, W)
        e0, e1 = E[1:, :, 0], E[1:, :, 1]
        m = [P[0, 0] * e0, P[0, 1] * e1, P[1, 0] * e0, P[1, 1] * e1]
        while m[0].shape[0] > 1:
            n = m[0].shape[0]
            even = n - n % 2
            a, b, c, d = (q[0:even:2] for q in m)
            a2, b2, c2, d2 = (q[1:even:2] for q in m)
            prod = [a * a2 + b * c2, a * b2 + b * d2, c * a2 + d * c2, c * b2 + d * d2]
            scale = np.maximum(np.maximum(prod[0], prod[1]), np.maximum(prod[2], prod[3]))
            total += float(np.log(scale).sum())
            prod = [q / scale for q in prod]
            m = [np.concatenate([q, r[even:]]) for q, r in zip(prod, m, strict=True)] if n % 2 else prod
        v0, v1 = v0 * m[0][0] + v1 * m[2][0], v0 * m[1][0] + v1 * m[3][0]
    return total + float(np.log(v0 + v1).sum())


def _mixture_loglik(logE: np.ndarray, pi: float) -> float:
    """Log-likelihood of the same two states without memory: each value slow with probability pi."""
    w = np.log(np.array([1.0 - pi, pi]))
    a = logE + w
    mx = a.max(axis=2)
    return float(np.sum(mx + np.log(np.exp(a[..., 0] - mx) + np.exp(a[..., 1] - mx))))


def _params(theta: np.ndarray) -> tuple[float, float, float, float]:
    return (_exp(theta[0]), 1.0 + _exp(theta[1]), _expit(theta[2]), _expit(theta[3]))


def wilson(successes: int, trials: int) -> list[float | None]:
    """Estimate and Wilson score interval (at :data:`CONFIDENCE`) of a binomial proportion."""
    if trials <= 0:
        return [None, None, None]
    p = successes / trials
    d = 1 + _Z * _Z / trials
    centre = (p + _Z * _Z / (2 * trials)) / d
    half = _Z * math.sqrt(p * (1 - p) / trials + _Z * _Z / (4 * trials * trials)) / d
    return [p, max(0.0, centre - half), min(1.0, centre + half)]


def _starts(x: np.ndarray, present: np.ndarray, shift: float) -> list[np.ndarray]:
    """Starting points: split at several quantiles, estimate each state's mean and the transitions."""
    vals = x[present]
    out = []
    for q in (0.5, 0.75, 0.9, 0.97):
        thr = float(np.quantile(vals, q))
        slow = present & (np.nan_to_num(x, nan=-np.inf) > thr)
        normal = present & ~slow
        if not slow.any() or not normal.any():
            continue
        m0 = max(float(x[normal].mean()) - shift, 1e-3 * float(vals.mean()) + 1e-12)
        F0 = min(max((float(x[slow].mean()) - shift) / m0, 1.05), 1e3)
        both = present[1:] & present[:-1]
        n01 = np.sum(~slow[:-1] & slow[1:] & both) + 0.5
        n00 = np.sum(~slow[:-1] & ~slow[1:] & both) + 0.5
        n10 = np.sum(slow[:-1] & ~slow[1:] & both) + 0.5
        n11 = np.sum(slow[:-1] & slow[1:] & both) + 0.5
        out.append(np.array([math.log(m0), math.log(F0 - 1), _logit(n01 / (n00 + n01)), _logit(n10 / (n10 + n11))]))
    if not out:
        out.append(np.array([math.log(max(float(vals.mean()) - shift, 1e-12)), 0.0, _logit(0.1), _logit(0.5)]))
    return out


def _hessian(f, theta: np.ndarray, free: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Central-difference Hessian of ``f`` over the coordinates ``free``."""
    idx = np.flatnonzero(free)
    n = idx.size
    H = np.zeros((n, n))
    f0 = f(theta)

    def at(*steps):
        t = theta.copy()
        for i, s in steps:
            t[idx[i]] += s
        return f(t)

    for a in range(n):
        H[a, a] = (at((a, h)) - 2 * f0 + at((a, -h))) / (h * h)
        for b in range(a):
            H[a, b] = H[b, a] = (at((a, h), (b, h)) - at((a, h), (b, -h)) - at((a, -h), (b, h))
                                 + at((a, -h), (b, -h))) / (4 * h * h)
    return H


def _fit_shift(series: Series, shift: float) -> dict:
    """The maximum-likelihood Markov model with a given shift."""
    from scipy.optimize import minimize

    x, cens, present = series.values, series.censored, series.present
    n = int(present.sum())
    mean_x = float(np.nanmean(x))
    lo_m = math.log(max(mean_x, 1e-300)) - 12
    hi_m = math.log(max(mean_x, 1e-300)) + 6
    bounds = [(lo_m, hi_m), _BOUND_F, _BOUND_P, _BOUND_P]

    def nll(theta: np.ndarray) -> float:
        m, F, pe, pl = _params(theta)
        value = -hmm_loglik(log_emissions(x, cens, m, F, shift), pe, pl)
        return value if math.isfinite(value) else 1e300

    starts = sorted(_starts(x, present, shift), key=nll)[:2]
    best = None
    for theta0 in starts:
        res = minimize(lambda t: nll(t) / n, np.clip(theta0, [b[0] for b in bounds], [b[1] for b in bounds]),
                       method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    theta = np.asarray(best.x, float)
    ll = -nll(theta)
    lower, upper = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    free = (theta > lower + 1e-3) & (theta < upper - 1e-3)
    ci: dict[str, list[float] | None] = {k: None for k in _NAMES}
    se: dict[str, float | None] = {k: None for k in _NAMES}
    if free.any():
        H = _hessian(nll, theta, free)
        try:
            cov = np.linalg.inv(H)
            ok = bool(np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0))
        except np.linalg.LinAlgError:
            ok = False
        if ok:
            for a, i in enumerate(np.flatnonzero(free)):
                s = math.sqrt(cov[a, a])
                lo_t, hi_t = theta.copy(), theta.copy()
                lo_t[i] -= _Z * s
                hi_t[i] += _Z * s
                ci[_NAMES[i]] = [_params(lo_t)[i], _params(hi_t)[i]]
                se[_NAMES[i]] = s
    m, F, pe, pl = _params(theta)
    # the same two states without memory
    logE = log_emissions(x, cens, m, F, shift)

    def nll_mix(t: np.ndarray) -> float:
        mm, FF, _, _ = _params(np.array([t[0], t[1], 0.0, 0.0]))
        value = -_mixture_loglik(log_emissions(x, cens, mm, FF, shift), _expit(t[2]))
        return value if math.isfinite(value) else 1e300

    t0 = np.array([theta[0], theta[1], _logit(pe / (pe + pl))])
    mix = minimize(lambda t: nll_mix(t) / n, t0, method="L-BFGS-B", bounds=[bounds[0], _BOUND_F, _BOUND_P])
    ll_mix = max(-nll_mix(mix.x), -nll_mix(t0), _mixture_loglik(logE, pe / (pe + pl)))
    return {"theta": theta, "params": (m, F, pe, pl), "shift": shift, "loglik": ll, "ci": ci, "se_log": se,
            "k": 4 + (shift > 0), "mixture_loglik": ll_mix, "free": free}


def _threshold(m: float, F: float, pi: float, shift: float) -> float:
    """The value above which slow is more likely than normal under the fit (stationary prior):
    ``shift + m F log(F (1 - pi) / pi) / (F - 1)``, at least ``shift``."""
    if F <= 1 or pi <= 0:
        return math.inf
    if pi >= 1:
        return shift
    ratio = F * (1 - pi) / pi
    return shift + max(m * math.log(ratio) * F / (F - 1), 0.0)


def _split(series: Series, threshold: float) -> dict:
    """States, transitions and spells implied by splitting the values at ``threshold``."""
    x, cens, present = series.values, series.censored, series.present
    xv = np.nan_to_num(x, nan=-np.inf)
    slow = present & (xv > threshold)
    known = present & (~cens | slow)  # a censored value at or below the threshold says nothing
    both = known[1:] & known[:-1]
    n00 = int(np.sum(~slow[:-1] & ~slow[1:] & both))
    n01 = int(np.sum(~slow[:-1] & slow[1:] & both))
    n10 = int(np.sum(slow[:-1] & ~slow[1:] & both))
    n11 = int(np.sum(slow[:-1] & slow[1:] & both))
    spells = [s for j in range(x.shape[1]) for s in slow_spells(slow[:, j])]
    return {"threshold": threshold, "slow_fraction": float(slow.sum() / max(int(known.sum()), 1)),
            "transitions": {"normal->normal": n00, "normal->slow": n01, "slow->normal": n10, "slow->slow": n11},
            "p_enter": wilson(n01, n00 + n01), "p_leave": wilson(n10, n10 + n11),
            "slow_spells": len(spells), "mean_slow_spell": float(np.mean(spells)) if spells else 0.0}


def fit_markov(series: Series) -> dict:
    """Fit ``markov:MEAN,FACTOR,P_ENTER,P_LEAVE[,SHIFT]`` to ``series`` by maximum likelihood.

    The shift is the smallest measured value (its maximum-likelihood value) when that is more
    than :data:`SHIFT_FLOOR` times the median (the times have a floor), else 0.

    Returns
    -------
    dict
        ``fitted`` (False with a ``reason`` when the data cannot support the model);
        ``spec``; ``params`` (``mean``, ``factor``, ``p_enter``, ``p_leave``, ``shift``);
        ``ci`` (each parameter's interval at :data:`CONFIDENCE`, None where the estimate sits
        on a bound of the search, e.g. a factor of 1: no distinct slow state);
        ``stationary_fraction``, ``mean_slow_spell``, ``state_autocorrelation``;
        ``loglik``, ``k``, ``aic``; ``memoryless`` (the i.i.d. two-state mixture's
        ``loglik`` and ``aic``, the likelihood-ratio ``statistic`` and its ``p_value``, on one
        degree of freedom); ``split`` (from :func:`_split` at the fitted threshold).
    """
    x, present, cens = series.values, series.present, series.censored
    n = int(present.sum())
    if x.shape[0] < 3 or n < 10:
        return {"fitted": False, "reason": f"{n} values over {x.shape[0]} iterations: too few for a Markov fit "
                                           "(need 10 values and 3 iterations)"}
    measured = x[present & ~cens]
    if measured.size < 5 or np.ptp(measured) <= 0:
        return {"fitted": False, "reason": "too few distinct measured values"}
    low = float(measured.min())
    fit = _fit_shift(series, low if low > SHIFT_FLOOR * float(np.median(measured)) else 0.0)
    fit["aic"] = 2 * fit["k"] - 2 * fit["loglik"]
    m, F, pe, pl = fit["params"]
    shift = fit["shift"]
    pi = pe / (pe + pl)
    lr = max(2 * (fit["loglik"] - fit["mixture_loglik"]), 0.0)
    k_mix = fit["k"] - 1
    spec = f"markov:{m:.4g},{F:.4g},{pe:.4g},{pl:.4g}" + (f",{shift:.4g}" if shift > 0 else "")
    return {"fitted": True, "spec": spec,
            "params": {"mean": m, "factor": F, "p_enter": pe, "p_leave": pl, "shift": shift},
            "ci": fit["ci"], "confidence": CONFIDENCE, "stationary_fraction": pi,
            "mean_slow_spell": 1.0 / pl, "state_autocorrelation": 1.0 - pe - pl,
            "loglik": fit["loglik"], "k": fit["k"], "aic": fit["aic"],
            "memoryless": {"loglik": fit["mixture_loglik"], "k": k_mix, "aic": 2 * k_mix - 2 * fit["mixture_loglik"],
                           "statistic": lr, "p_value": math.erfc(math.sqrt(lr / 2))},  # chi-square, 1 df
            "split": _split(series, _threshold(m, F, pi, shift))}


def verdict(report: dict, alpha: float = 0.05) -> dict:
    """Which delay model describes the data best, and why.

    ``report`` holds ``models`` and ``best`` (the i.i.d. fits of
    :func:`gdcode.simulate.fit_sample`) and, when the data are time series, ``markov``
    (:func:`fit_markov`), ``autocorrelation`` and ``cross_correlation``
    (:mod:`gdcode.traces`). The Markov model wins when its AIC is below every i.i.d.
    model's and slow spells are shown to last (its likelihood-ratio test against the
    memoryless mixture and the lag-1 autocorrelation both significant at ``alpha``: either
    alone is fooled now and then, e.g. by workers that slow down together); else
    ``correlated`` when workers are significantly correlated within the same iteration (any
    correlation in time is then added to the reasons); else the best i.i.d. model. Returns
    ``model``, ``spec`` and ``reasons``.
    """
    fitted = [r for r in report.get("models", []) if r.get("fitted")]
    iid = next((r for r in fitted if r["model"] == report.get("best")), None)
    mk, ac, cc = report.get("markov"), report.get("autocorrelation"), report.get("cross_correlation")
    reasons: list[str] = []
    time_corr = bool(ac and ac["pairs"] and ac["p_value"] < alpha and ac["r"] > 0)
    memory = bool(mk and mk.get("fitted") and mk["memoryless"]["p_value"] < alpha)
    cross = bool(cc and cc.get("pairs") and cc["p_value"] < alpha and cc["within_r"] > 0 and cc.get("spec"))
    ac_text = (f"lag-1 autocorrelation r = {ac['r']:.3f} over {ac['pairs']} pairs (z = {ac['z']:.1f}, "
               f"p = {ac['p_value']:.2g})") if ac and ac["pairs"] else ""
    cc_text = (f"workers' times in the same iteration correlate: mean r = {cc['mean_r']:.3f} (z = {cc['z']:.1f}, "
               f"p = {cc['p_value']:.2g}), {cc['within_r']:.3f} within groups of {cc['group_size']}") \
        if cc and cc.get("pairs") else ""
    out: dict[str, Any]
    if mk and mk.get("fitted") and (iid is None or mk["aic"] < iid["aic"]) and memory and time_corr:
        out = {"model": "markov", "spec": mk["spec"]}
        if iid is not None:
            reasons.append(f"its AIC {mk['aic']:.1f} is {iid['aic'] - mk['aic']:.1f} below the best i.i.d. "
                           f"model's ({iid['spec']}, AIC {iid['aic']:.1f})")
        ml = mk["memoryless"]
        reasons.append(f"slow spells last: against the same two states without memory, likelihood ratio "
                       f"{ml['statistic']:.1f}, p = {ml['p_value']:.2g}; a slow spell lasts "
                       f"{mk['mean_slow_spell']:.3g} iterations on average, workers are slow "
                       f"{100 * mk['stationary_fraction']:.1f}% of the time")
        if ac_text:
            reasons.append(ac_text)
        if cross and cc is not None:
            reasons.append(f"{cc_text}: {cc['spec']} describes that part; no built-in model has both")
    elif cross and cc is not None:
        out = {"model": "correlated", "spec": cc["spec"]}
        reasons.append(cc_text)
        if ac_text:
            reasons.append(("but not in time: " if not time_corr else "") + ac_text)
        if time_corr and mk and mk.get("fitted"):
            reasons.append(f"the Markov fit ({mk['spec']}) does not beat the i.i.d. models by AIC")
    elif iid is not None:
        out = {"model": iid["model"], "spec": iid["spec"]}
        reasons.append(f"lowest AIC ({iid['aic']:.1f}) of the models; the Kolmogorov-Smirnov test "
                       f"{'does not reject' if iid['fits'] else 'rejects'} it at the {alpha:g} level "
                       f"(p = {iid['p_value']:.2g})")
        if mk and mk.get("fitted"):
            if mk["aic"] < iid["aic"]:
                reasons.append(f"the Markov model's AIC {mk['aic']:.1f} is lower, but its slow spells are not shown "
                               f"to last (likelihood ratio p = {mk['memoryless']['p_value']:.2g}, and the lag-1 "
                               "autocorrelation below): a mixture of speeds, not spells")
            else:
                reasons.append(f"the Markov model ({mk['spec']}) has a higher AIC, {mk['aic']:.1f}")
        if ac_text:
            reasons.append(("times are correlated in time, which no i.i.d. model describes: " if time_corr
                            else "no significant correlation in time: ") + ac_text)
        if cc_text and not cross:
            reasons.append("no significant correlation between workers: " + cc_text.split(": ", 1)[1])
    else:
        out = {"model": None, "spec": None}
        reasons.append("no model could be fitted")
    out["reasons"] = reasons
    return out
