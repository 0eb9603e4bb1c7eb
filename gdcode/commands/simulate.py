"""Predict a scheme's iteration times under a delay model, with no MPI (discrete-event simulation).

``gdcode simulate [CONFIG.toml] --scheme NAME --workers W [--stragglers S] --delay SPEC
[--delay-scale-with-load] [--draws N] [--compute SECONDS|trace:FILE] [--comm SECONDS]
[--wait quantile:Q|mad:K] [--replay] [--json]`` reports the mean and quantiles of the iteration time. With
``--target-loss X`` (and the run's ``--dataset``, ``--model``, ``--lr`` ...) it also replays
the optimiser with the code's decoded gradients and reports the simulated time to reach X
(and, for approximate codes, the gradient error). ``--replay`` takes each pause from the
(seed, worker, iteration) stream a ``gdcode run --seed N`` meets, so a run's delays are
replayed exactly. ``gdcode simulate --fit RUN_DIR`` fits delay models to a run's measured
reply times, ``gdcode simulate --fit trace:FILE`` to a trace's times (``worker,iteration,seconds``,
e.g. from ``gdcode trace import``): exponential, shifted-exponential and Pareto pauses, the
``markov`` model of slow spells (with confidence intervals), the lag-1 autocorrelation and the
correlation between workers, and says which model fits best and why.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from gdcode import options as opts
from gdcode.errors import ConfigError

#: the Examples section of the help page
EXAMPLES = """\
gdcode simulate --scheme frc --workers 12 --stragglers 2 --delay markov:0.1,8,0.05,0.25
gdcode simulate --scheme cyclic --workers 12 --stragglers 2 --delay correlated:0.2,1.5,0.6,4
gdcode simulate --fit results/my-run
gdcode simulate --fit trace:job4.csv --json
"""

#: run options the simulator takes (same names, types and defaults as ``gdcode run``)
RUN_OPTIONS = ("scheme", "workers", "stragglers", "collect", "code-options", "wait", "min-replies",
               "delay", "delay-scale-with-load", "seed", "dataset", "test-fraction", "model", "intercept",
               "l2", "update", "lr", "lr-schedule", "lr-step-every", "lr-decay", "momentum", "target-loss",
               "iterations")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("config", nargs="?", help="TOML file of run options (command-line options override it)")
    opts.add_arguments(parser, tuple(name.replace("-", "_") for name in RUN_OPTIONS))
    parser.add_argument("--draws", type=int, default=None,
                        help="simulated iterations (default 20000; with --replay, --iterations)")
    parser.add_argument("--compute", default=None, metavar="SPEC",
                        help="compute time: SECONDS for the full dataset on one worker (scaled by its load), "
                             "one value per worker (comma-separated), or trace:FILE of measured seconds per "
                             "(worker, iteration) as written by gdcode run --record-delays (default 0)")
    parser.add_argument("--comm", type=float, default=0.0, metavar="SECONDS",
                        help="transfer time of each message to the coordinator (default 0)")
    parser.add_argument("--network", default=None, metavar="LATENCY,BANDWIDTH",
                        help="links of LATENCY seconds one way and BANDWIDTH (tc notation: 100mbit, 1gbit): each "
                             "message's transfer and the coordinator's link serialising the replies (replaces --comm)")
    parser.add_argument("--message-bytes", type=int, default=None, metavar="B",
                        help="bytes of each model and reply message (default: from --dataset and --model, "
                             "8 * (parameters + 4))")
    parser.add_argument("--replay", action="store_true",
                        help="draw each pause from the run's own (seed, worker, iteration) stream (slower)")
    parser.add_argument("--first-iteration", type=int, default=1, help="iteration number of the first draw")
    parser.add_argument("--generic", action="store_true",
                        help="decode every draw with the code's own decode (slow; for cross-checks)")
    parser.add_argument("--fit", metavar="RUN_DIR|trace:FILE", default=None,
                        help="fit delay models (exp, shifted-exp, pareto, markov) to the reply times of a run "
                             "directory or the times of a trace file, with the correlations in time and between "
                             "workers, and say which fits best")
    parser.add_argument("--bootstrap", type=int, default=200, help="--fit: bootstrap resamples of the p-value")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _options(args: argparse.Namespace) -> opts.RunOptions:
    toml = opts.load_toml(args.config) if args.config else {}
    return opts.from_sources(toml, opts.given(args))


def main(args: argparse.Namespace) -> int:
    if args.fit:
        return _fit(args)
    from gdcode import delays, problem, simulate

    options = _options(args)
    W = options.workers
    if args.comm < 0 or not math.isfinite(args.comm):
        raise ConfigError(f"--comm {args.comm} must be a finite number of seconds >= 0")
    if args.first_iteration < 1:
        raise ConfigError(f"--first-iteration {args.first_iteration} must be at least 1")
    target = options.target_loss
    built = None
    if target is not None:  # the replay trains: the dataset, model and optimiser too
        built = problem.build(options.replace(mode="coded"))  # checks --wait against the code too
        assert built.code is not None
        code, delay = built.code, built.delay
    else:
        code, delay = problem.build_code(options), problem.build_delay(options)
        problem.check_wait(options, code)
    compute = simulate.parse_compute(args.compute, W)
    if isinstance(delay, delays.Persistent) and compute.kind == "zero" and delay.base == 0:
        raise ConfigError(f"--delay {options.delay}: a persistent straggler is FACTOR times slower than its "
                          "compute plus BASE, and both are 0 here; give --compute SECONDS or "
                          "persistent:K,FACTOR,BASE with BASE > 0")
    draws = args.draws if args.draws is not None else (options.iterations if args.replay else 20000)
    if target is not None:
        draws = max(draws, options.iterations)
    network = None
    if args.network is not None:
        message = args.message_bytes
        if message is None:  # a model's or a gradient's message: the header and every parameter
            from gdcode.runtime.protocol import MODEL

            n_params = (built or problem.build(options.replace(mode="coded"))).n_params
            message = 8 * MODEL.size(n_params)
        try:
            network = simulate.Network.parse(args.network, message)
        except ValueError as exc:
            raise ConfigError(f"--network {args.network}: {exc}") from None
    elif args.message_bytes is not None:
        raise ConfigError("--message-bytes goes with --network LATENCY,BANDWIDTH")
    sim = simulate.simulate(code, delay, draws=draws, compute=compute, comm=args.comm, replay=args.replay,
                            first_iteration=args.first_iteration, seed=options.seed, generic=args.generic,
                            network=network, wait=options.wait, min_replies=options.min_replies)
    out = {"scheme": options.scheme, "workers": W, "stragglers": options.stragglers,
           "collect": getattr(code, "collect", None), "delay": delay.spec,
           "delay_scale_with_load": options.delay_scale_with_load, "compute": compute.spec,
           "comm_seconds": args.comm, "seed": options.seed, "replay": bool(args.replay),
           "first_iteration": args.first_iteration, "decode_method": sim.method, "wait": options.wait,
           "mean_load": float(code.load().mean())}
    if network is not None:
        out["network"] = network.describe()
    out.update(sim.summary())
    out["closed_form_mean_seconds"] = (simulate.closed_form_mean(code, delay, compute, args.comm)
                                       if network is None and not sim.adaptive else None)
    if built is not None:
        replay = simulate.train_replay(sim, built, options.iterations, target)
        out["time_to_target"] = replay.summary()
        out["time_to_target"].update({"dataset": options.dataset, "model": options.model,
                                      "update": options.update, "lr": options.lr})
    if args.json:
        print(json.dumps(_finite(out)))
    else:
        _print(out, code)
    return 0


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else "inf"
    return obj


def _print(out: dict, code) -> None:
    scaled = " (pauses scaled by load)" if out["delay_scale_with_load"] else ""
    name = out["scheme"] + (f" collect={out['collect']}" if out["collect"] is not None else "")
    net = out.get("network")
    link = (f"network {net['latency_seconds']:g} s, {net['bandwidth_bytes_per_second'] / 1e6:.4g} MB/s, "
            f"{net['model_bytes']} B a message" if net else f"comm {out['comm_seconds']:g} s")
    if out.get("wait", "fixed") != "fixed":
        name += f", wait {out['wait']}"
    print(f"simulate: {name}, W={out['workers']}, S={out['stragglers']}, load {out['mean_load']:.3g}, "
          f"delay {out['delay']}{scaled}, compute {out['compute']}, {link}")
    how = f"replayed from seed {out['seed']}, iterations {out['first_iteration']}.." if out["replay"] \
        else "drawn in bulk"
    print(f"{out['draws']} draws ({how}; {out['decode_method']} decode)")
    if out["never_decoded"]:
        print(f"  {out['never_decoded']} draws never decoded")
    print(f"  iteration time: mean {out['mean_iteration_seconds']:.6g} s (standard error "
          f"{out['stderr_mean_seconds']:.2g}), std {out['std_iteration_seconds']:.4g} s")
    q = out["quantiles"]
    print("  quantiles: " + ", ".join(f"{k} {v:.4g} s" for k, v in q.items())
          + f"; min {out['min_iteration_seconds']:.4g} s, max {out['max_iteration_seconds']:.4g} s")
    cf = out["closed_form_mean_seconds"]
    if cf is not None:
        rel = (out["mean_iteration_seconds"] - cf) / cf
        print(f"  closed form: {cf:.6g} s (simulation {100 * rel:+.2f}%)")
    tt = out.get("time_to_target")
    if tt:
        what = f"{tt['model']} on {tt['dataset']}, {tt['update']} lr {tt['lr']:g}"
        if tt["target_reached"]:
            print(f"  time to training loss {tt['target_loss']:g} ({what}): {tt['seconds_to_target']:.4g} s "
                  f"simulated, {tt['iterations_to_target']} iterations")
        else:
            print(f"  training loss {tt['target_loss']:g} not reached in {tt['replayed_iterations']} iterations "
                  f"({what}); final loss {tt['final_train_loss']:.6g} after {tt['simulated_seconds']:.4g} s "
                  "simulated (raise --iterations)")
        if not code.exact or tt["mean_gradient_error"] > 1e-9:
            print(f"  mean relative gradient error ||g_hat - g|| / ||g||: {tt['mean_gradient_error']:.4g}")


def _fit_trace(args: argparse.Namespace) -> int:
    from gdcode import simulate

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap {args.bootstrap} must be >= 0")
    file = args.fit[len("trace:"):]
    try:
        report = simulate.fit_trace(file, bootstrap=args.bootstrap, seed=0)
    except ValueError as exc:
        raise ConfigError(f"--fit {args.fit}: {exc}") from None
    report.update({"trace": file, "run_delay": None, "compute": None, "delay_scale_with_load": False})
    if args.json:
        print(json.dumps(_finite(report)))
        return 0
    print(f"fit: trace {file}; fitted: {report['what']}")
    print(f"  {report['observed']} values; p-values from {report['bootstrap']} bootstrap refits")
    _print_fit(report)
    return 0


def _fit(args: argparse.Namespace) -> int:
    from gdcode import simulate
    from gdcode.results import load_run

    if args.fit.startswith("trace:"):
        return _fit_trace(args)
    path = Path(args.fit)
    try:
        run = load_run(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"--fit {path}: {exc}") from None
    W = int(run.metadata.get("options", {}).get("workers", 1))
    compute = simulate.parse_compute(args.compute, W) if args.compute else None
    source = args.compute
    if compute is None:
        recorded = run.metadata.get("options", {}).get("record_delays")
        for candidate in ([Path(recorded), path / Path(recorded).name] if recorded else []):
            if candidate.is_file():
                compute = simulate.parse_compute(f"trace:{candidate}", W)
                source = f"trace:{candidate}"
                break
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap {args.bootstrap} must be >= 0")
    report = simulate.fit_run(run, compute, bootstrap=args.bootstrap, seed=run.metadata.get("seed", 0))
    opts = run.metadata.get("options", {})
    report.update({"run": str(path), "run_delay": opts.get("delay"), "compute": source,
                   "delay_scale_with_load": bool(opts.get("delay_scale_with_load"))})
    if args.json:
        print(json.dumps(_finite(report)))
        return 0
    print(f"fit: {path} (run delay {report['run_delay']}); fitted: {report['what']}")
    print(f"  {report['observed']} measured values, {report['censored']} censored (workers cancelled before "
          f"replying: longer than their iteration); p-values from {report['bootstrap']} bootstrap refits")
    _print_fit(report)
    return 0


def _print_fit(report: dict) -> None:
    print("  i.i.d. models:")
    print(f"  {'model':<12}{'--delay spec':<30}{'log-lik':>12}{'AIC':>12}{'KS D':>8}{'p':>8}  fits?")
    for r in report["models"]:
        if not r["fitted"]:
            print(f"  {r['model']:<12}not fitted: {r['reason']}")
            continue
        print(f"  {r['model']:<12}{r['spec']:<30}{r['loglik']:>12.2f}{r['aic']:>12.2f}{r['ks_statistic']:>8.3f}"
              f"{r['p_value']:>8.3f}  {'yes' if r['fits'] else 'no'}")
    best = next((r for r in report["models"] if r["model"] == report["best"]), None)
    scale = " --delay-scale-with-load" if report["delay_scale_with_load"] else ""
    if best is None:
        print("  no model could be fitted")
    elif report["best_fits"]:
        print(f"  i.i.d. verdict: {best['model']} fits (KS D = {best['ks_statistic']:.3f}, p = {best['p_value']:.2f}); "
              f"simulate with --delay {best['spec']}{scale}")
    else:
        print(f"  i.i.d. verdict: no model fits at the {report['alpha']:g} level; the closest by AIC is {best['spec']} "
              f"(KS D = {best['ks_statistic']:.3f}, p = {best['p_value']:.3g}); treat predictions from it with care")
    per = report["per_worker"]
    if len(per) > 1:
        print("  per worker (measured / cut off, mean measured): " + ", ".join(
            f"{w}: {v['measured']}/{v['censored']}" + (f" {v['mean_measured']:.4g}" if v["mean_measured"] is not None
                                                        else "") for w, v in per.items()))
    slow = report["persistent_stragglers"]
    if slow:
        print(f"  worker(s) {', '.join(map(str, slow))} look persistently slow (cut off far more often, or slower, "
              "than the median worker): an i.i.d. model cannot describe them; consider "
              "--delay persistent:K,FACTOR,BASE")
    _print_markov(report)
    v = report.get("verdict")
    if v and "markov" in report:
        if v["model"] is None:
            print("  overall: no model could be fitted")
        else:
            print(f"  overall: {v['model']} fits best; simulate with --delay {v['spec']}{scale}")
        for reason in v["reasons"]:
            print(f"    - {reason}")


def _interval(ci) -> str:
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "(none: at a bound)"


def _print_markov(report: dict) -> None:
    mk = report.get("markov")
    if mk is None:
        return
    if not mk["fitted"]:
        print(f"  markov: not fitted: {mk['reason']}")
    else:
        p, ci = mk["params"], mk["ci"]
        level = f"{100 * mk['confidence']:g}%"
        print(f"  markov: {mk['spec']}  log-lik {mk['loglik']:.2f}  AIC {mk['aic']:.2f}  ({mk['k']} parameters; "
              f"{level} confidence intervals)")
        print(f"    MEAN {p['mean']:.4g} {_interval(ci['mean'])}, FACTOR {p['factor']:.4g} {_interval(ci['factor'])}, "
              f"P_ENTER {p['p_enter']:.4g} {_interval(ci['p_enter'])}, "
              f"P_LEAVE {p['p_leave']:.4g} {_interval(ci['p_leave'])}"
              + (f", SHIFT {p['shift']:.4g} (the smallest value)" if p["shift"] else ""))
        print(f"    slow {100 * mk['stationary_fraction']:.1f}% of iterations, spells of {mk['mean_slow_spell']:.3g} "
              f"iterations on average; state lag-1 correlation {mk['state_autocorrelation']:.3f}")
        ml = mk["memoryless"]
        print(f"    against the same two states without memory (AIC {ml['aic']:.2f}): likelihood ratio "
              f"{ml['statistic']:.2f}, p = {ml['p_value']:.3g}")
        sp = mk["split"]
        tr = sp["transitions"]
        pe, pl = sp["p_enter"], sp["p_leave"]
        print(f"    split at {sp['threshold']:.4g} (slow above: as likely slow as normal there): slow "
              f"{100 * sp['slow_fraction']:.1f}%, transitions n->n {tr['normal->normal']}, n->s {tr['normal->slow']}, "
              f"s->n {tr['slow->normal']}, s->s {tr['slow->slow']}"
              + (f"; P_ENTER {pe[0]:.3g} [{pe[1]:.3g}, {pe[2]:.3g}]" if pe[0] is not None else "")
              + (f", P_LEAVE {pl[0]:.3g} [{pl[1]:.3g}, {pl[2]:.3g}]" if pl[0] is not None else ""))
    ac = report.get("autocorrelation")
    if ac and ac["pairs"]:
        print(f"  lag-1 autocorrelation (each worker about its own mean): r = {ac['r']:.3f} over {ac['pairs']} pairs, "
              f"z = {ac['z']:.2f}, p = {ac['p_value']:.3g}")
        per = ac["per_worker"]
        if 1 < len(per) <= 32:
            print("    per worker: " + ", ".join(f"{w}: {v['r']:.2f}" for w, v in per.items()))
    cc = report.get("cross_correlation")
    if cc and cc.get("pairs"):
        print(f"  correlation between workers in the same iteration: mean r = {cc['mean_r']:.3f} over {cc['pairs']} "
              f"pairs (z = {cc['z']:.2f}, p = {cc['p_value']:.3g}), largest {cc['max_r']:.3f} (workers "
              f"{cc['max_pair'][0]} and {cc['max_pair'][1]}); groups of {cc['group_size']}: within "
              f"{cc['within_r']:.3f}, between {cc['between_r']:.3f}"
              + (f"; as a model: {cc['spec']}" if cc.get("spec") else ""))
