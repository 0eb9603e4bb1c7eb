"""Shared machinery of the experiment scripts: a TOML config in, runs, figures and a Markdown table out.

Launch: not directly; each experiment script (``experiments/NAME.py``, or
``make experiment NAME=...``) calls :func:`main` with its name.

An experiment config (``experiments/NAME.toml``) has:

- ``[experiment]``: ``title``; ``group_by`` (a run option: one set of figures per value);
  ``figures`` (a list of ``{x, y}`` tables: metric figures per group); ``target_loss`` (the
  time-to-target column); ``heatmap`` (schemes or modes whose worker heatmaps are drawn);
- ``[common]``: ``gdcode run`` options shared by every run;
- ``[sweep]``: options with a list of values; every run is repeated for each combination;
- ``[[runs]]``: one table per run, options overriding ``[common]``; ``collect_fraction``
  sets ``collect`` to ``round(fraction * W)`` (at least 1); ``label`` names the run;
- ``[[setups]]`` (optional): whole problems, each a table with a ``label`` and the run options
  it sets over ``[common]`` (a dataset with its network, batch size and step size); every run is
  repeated for each setup, and ``group_by = "setup"`` gives each its own figures. A table in a
  setup named after a mode (``coded = { batch-size = 16 }``) holds options for that mode's runs
  only (a run's own options still win). A setup with
  ``optional = true`` runs only when ``--setup LABEL`` asks for it (one that needs a dataset
  the user prepares); ``--setup`` picks setups by label;
- ``[clusters.NAME]`` (optional): an emulated cluster (``hosts``, ``slots``, ``bandwidth``,
  ``latency``; see ``gdcode cluster up``) that runs with ``cluster = "NAME"`` use. The script
  makes each one before its first run and removes the ones it made at the end (root only); the
  simulator's prediction of a coded run on a shaped cluster then adds the links
  (:class:`gdcode.simulate.Network`);
- ``[quick]``: what ``--quick`` overrides (common options, sweep lists, ``seeds`` or ``setups``,
  a list of setup labels).

``target_loss`` and ``target_accuracy`` in ``[experiment]`` add the time to reach them: the
first evaluation whose training loss is at or below ``target_loss``, or whose test accuracy is
at or above ``target_accuracy``.

``seeds = [0, 1, 2]`` in ``[experiment]`` repeats every run once per seed (replacing the
``seed`` option); each run directory's name ends in ``-seedN``. ``results.md`` then gives the
mean and the sample standard deviation over the seeds, and the figures draw each run's mean
with a band from its lowest to its highest seed (``gdcode plot --band``).

For every run the script calls ``gdcode run`` (skipping, with a message, a scheme this gdcode
does not have or a mode it cannot run yet), then the simulator on the same delays
(``gdcode.simulate``: the run's seed replayed, its measured compute times) and on 20000 draws,
and writes into ``--out``: ``runs/`` (the run directories), one figure per (group, figure
spec), the iteration-time distributions beside the simulator's, worker heatmaps,
``results.md`` (the table and the figures) and ``results.json``.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
BULK_DRAWS = 20000


@dataclass
class RunSpec:
    """One run of an experiment: its name, group value and ``gdcode run`` options."""

    name: str
    group: object
    options: dict
    label: str
    skip: str | None = None  # why it cannot run in this gdcode
    key: str = ""  # the run's name without its seed: the runs of one key differ only in their seed
    seed: int | None = None  # with ``seeds``: this repetition's seed
    run: object = None  # the run read back
    row: dict = field(default_factory=dict)


def load_config(path: Path, quick: bool = False, overrides: dict | None = None) -> dict:
    """Read an experiment config; apply ``[quick]`` when ``quick``, then ``overrides`` to ``[common]``."""
    from gdcode.errors import ConfigError
    from gdcode.options import read_toml

    cfg = read_toml(path, "experiment config")
    cfg.setdefault("experiment", {})
    cfg.setdefault("common", {})
    cfg.setdefault("sweep", {})
    if not cfg.get("runs"):
        raise ConfigError(f"experiment config {path} has no [[runs]]")
    cfg.setdefault("setups", [])
    cfg.setdefault("clusters", {})
    _resolve_traces(cfg, path.resolve().parent)
    if quick:
        for key, value in cfg.get("quick", {}).items():
            if key == "seeds":
                cfg["experiment"]["seeds"] = value
            elif key == "setups":
                cfg["experiment"]["setups"] = value
            elif key in cfg["sweep"]:
                cfg["sweep"][key] = value
            else:  # over [common] and any setup's own value
                cfg["common"][key] = value
                cfg.setdefault("overrides", {})[key] = value
    for key, value in (overrides or {}).items():
        if key == "seeds":
            cfg["experiment"]["seeds"] = value
            continue
        if key == "seed":  # one seed asked for: no repetitions
            cfg["experiment"].pop("seeds", None)
        cfg["sweep"].pop(key, None)
        cfg["common"][key] = value
        cfg.setdefault("overrides", {})[key] = value
    return cfg


def _resolve_traces(cfg: dict, base: Path) -> None:
    """Make a ``trace:FILE`` delay relative to the config's folder absolute (when it is there), so that
    the experiment runs from any working directory."""
    def fix(value):
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, str) and value.startswith("trace:"):
            file = Path(value[len("trace:"):])
            if not file.is_absolute() and (base / file).exists():
                return f"trace:{base / file}"
        return value

    tables = [cfg["common"], cfg["sweep"], *cfg["runs"], *cfg["setups"], cfg.get("quick", {})]
    for table in tables:
        for key in list(table):
            if _dest(key) == "delay":
                table[key] = fix(table[key])


def shown(value: object) -> object:
    """A group value as names, tables and figures show it: a trace delay by its file name alone."""
    if isinstance(value, str) and value.startswith("trace:"):
        return f"trace:{Path(value[len('trace:'):]).name}"
    return value


def select_setups(cfg: dict, chosen: list[str] | None = None) -> list[dict]:
    """The setups to run: those labelled in ``chosen`` (``--setup``), else in ``[quick]``'s
    ``setups``, else every one not marked ``optional``; ``[{}]`` when the config has none.

    Raises
    ------
    ConfigError
        A setup without a label, two with one label, or a chosen label that is not there.
    """
    from gdcode.errors import ConfigError

    setups = cfg.get("setups") or []
    if not setups:
        if chosen:
            raise ConfigError(f"--setup {','.join(chosen)}: this experiment has no [[setups]]")
        return [{}]
    labels = [st.get("label") for st in setups]
    if any(not isinstance(label, str) or not label for label in labels) or len(set(labels)) != len(labels):
        raise ConfigError(f"every [[setups]] table needs its own label = \"...\" (have: {labels})")
    wanted = chosen if chosen else cfg["experiment"].get("setups")
    if wanted:
        missing = [w for w in wanted if w not in labels]
        if missing:
            raise ConfigError(f"setup(s) {', '.join(missing)} not in the config; it has: {', '.join(labels)}")
        return [st for st in setups if st["label"] in wanted]
    return [st for st in setups if not st.get("optional", False)]


def seeds_of(cfg: dict) -> list[int] | None:
    """The experiment's ``seeds`` (None without them); ConfigError unless distinct integers >= 0."""
    from gdcode.errors import ConfigError

    seeds = cfg["experiment"].get("seeds")
    if seeds is None:
        return None
    if (not isinstance(seeds, list) or not seeds
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in seeds)
            or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"seeds = {seeds!r}: give a list of distinct integers >= 0, e.g. seeds = [0, 1, 2]")
    return list(seeds)


def _dest(key: str) -> str:
    return key.replace("-", "_")


def expand(cfg: dict) -> list[RunSpec]:
    """Every run of the experiment: the sweep's combinations times ``[[runs]]``."""
    from gdcode import codes, options
    from gdcode.errors import ConfigError

    group_by = _dest(cfg["experiment"].get("group_by", "workers"))
    sweep = {_dest(k): (v if isinstance(v, list) else [v]) for k, v in cfg["sweep"].items()}
    keys = list(sweep)
    specs = []
    labelled: list[bool] = []
    setups = select_setups(cfg, cfg["experiment"].get("chosen_setups"))
    overrides = {_dest(k): v for k, v in cfg.get("overrides", {}).items()}
    for setup, combo in itertools.product(setups, itertools.product(*(sweep[k] for k in keys))):
        base = {_dest(k): v for k, v in cfg["common"].items()}
        base.update({_dest(k): v for k, v in setup.items() if k not in ("label", "optional")
                     and not isinstance(v, dict)})
        base.update(overrides)  # the command line wins over a setup
        base.update(dict(zip(keys, combo, strict=True)))
        for entry in cfg["runs"]:
            opts = dict(base)
            per_mode = setup.get(entry.get("mode", base.get("mode", "coded")), {})
            opts.update({_dest(k): v for k, v in per_mode.items()})
            opts.update(overrides)
            opts.update({_dest(k): v for k, v in entry.items() if k not in ("label", "collect_fraction")})
            if "collect_fraction" in entry:
                opts["collect"] = max(1, round(entry["collect_fraction"] * opts.get("workers", 4)))
            unknown = [k for k in opts if k not in options.OPTION_BY_DEST]
            if unknown:
                raise ConfigError(f"unknown run option(s) {', '.join(unknown)} in the experiment config; known: "
                                  f"{', '.join(o.name for o in options.OPTIONS)}")
            mode = opts.get("mode", "coded")
            what = opts.get("scheme", "uncoded") if mode == "coded" else mode
            prefix = setup.get("label") if group_by == "setup" else (
                f"{group_by[0]}{shown(opts.get(group_by))}" if group_by in opts else None)
            parts = [setup.get("label") if setup and group_by != "setup" else None, prefix, what]
            if mode == "coded" and opts.get("stragglers"):
                parts.append(f"s{opts['stragglers']}")
            if opts.get("collect"):
                parts.append(f"c{opts['collect']}")
            name = _safe("-".join(str(p) for p in parts if p))
            label = entry.get("label", _label(opts))
            skip = None
            if mode == "coded" and what not in codes.names():
                skip = f"the code {what!r} is not in this gdcode (it has: {', '.join(codes.names())})"
            group = setup.get("label") if group_by == "setup" else shown(opts.get(group_by))
            specs.append(RunSpec(name=name, group=group, options=opts, label=label, skip=skip))
            labelled.append("label" in entry)
    names = [s.name for s in specs]
    for i, s in enumerate(specs):  # runs that differ only in options the name leaves out (a gossip mixing)
        if names.count(s.name) > 1 and labelled[i]:
            head = s.group if group_by == "setup" else (f"{group_by[0]}{s.group}" if group_by in s.options else None)
            s.name = _safe("-".join(str(p) for p in (head, s.label.lower()) if p))
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"two runs of the experiment would share the name(s) {', '.join(sorted(dup))}; "
                          "give them different options or labels")
    for s in specs:
        s.key = s.name
    seeds = seeds_of(cfg)
    if seeds is None:
        return specs
    return [RunSpec(name=f"{s.name}-seed{seed}", group=s.group, options={**s.options, "seed": seed}, label=s.label,
                    skip=s.skip, key=s.key, seed=seed) for s in specs for seed in seeds]


def _safe(text: str) -> str:
    """A file-name-safe form: what is not a letter, digit, dot or ``=`` becomes ``-``
    (a swept delay such as ``persistent:1,10,0.01`` names run directories and figures)."""
    return re.sub(r"[^A-Za-z0-9.=]+", "-", text).strip("-")


def _label(opts: dict) -> str:
    mode = opts.get("mode", "coded")
    label = opts.get("scheme", "uncoded") if mode == "coded" else mode
    if mode == "coded" and opts.get("stragglers"):
        label += f" S={opts['stragglers']}"
    if opts.get("collect"):
        label += f" collect={opts['collect']}"
    return label


def check_runnable(spec: RunSpec, out: Path) -> None:
    """Set ``spec.skip`` when this gdcode cannot run it (a mode not available yet); raise
    ConfigError for any other bad option, which is a mistake in the config."""
    from gdcode import problem
    from gdcode.errors import ConfigError, OptionError
    from gdcode.options import RunOptions

    if spec.skip:
        return
    try:
        problem.check(RunOptions.from_dict({**spec.options, "out": str(out)}, origin=f"run {spec.name}"))
    except OptionError as exc:
        if spec.options.get("mode", "coded") != "coded" and "mode" in exc.message:
            spec.skip = str(exc)
            return
        raise ConfigError(f"run {spec.name}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"run {spec.name}: {exc}") from None


def cli_args(options: dict) -> list[str]:
    """``gdcode run`` arguments for ``options``."""
    from gdcode.options import OPTION_BY_DEST

    args = []
    for key, value in options.items():
        opt = OPTION_BY_DEST[key]
        if opt.flag:
            if value:
                args.append(f"--{opt.name}")
        elif value is not None:
            args += [f"--{opt.name}", str(value)]
    return args


def _reusable(run_dir: Path, options: dict) -> bool:
    """A finished run directory with the same options is kept (``--force`` redoes it)."""
    try:
        meta = json.loads((run_dir / "metadata.json").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    stored = meta.get("options", {})
    return summary.get("status") == "ok" and all(stored.get(k) == v for k, v in options.items())


def execute(spec: RunSpec, runs_dir: Path, force: bool = False) -> str:
    """Run ``spec`` with ``gdcode run`` (unless a finished identical run is there); return what happened."""
    import shutil

    from gdcode.results import load_run

    run_dir = runs_dir / spec.name
    coded = spec.options.get("mode", "coded") == "coded"
    compute_csv = runs_dir / f"{spec.name}.compute.csv"
    if not force and _reusable(run_dir, spec.options) and (compute_csv.exists() or not coded):
        spec.run = load_run(run_dir)
        return "kept (already done; --force redoes it)"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "gdcode", "run", *cli_args(spec.options), "--out", str(runs_dir),
           "--name", spec.name, "--quiet"]
    if coded:
        cmd += ["--record-delays", str(compute_csv)]
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"run {spec.name} failed (exit {res.returncode}): {shlex.join(cmd)}\n{res.stderr}")
    spec.run = load_run(run_dir)
    return f"done in {time.monotonic() - t0:.1f} s"


def _compute_trace(path: Path, n_workers: int):
    """The run's measured compute as a ComputeModel; a worker that never replied gets the median."""
    import numpy as np

    from gdcode import delays, simulate

    table = delays.read_trace(str(path)) if path.exists() and path.stat().st_size > 30 else {}
    every = np.concatenate([rows[1] for rows in table.values()]) if table else np.zeros(1)
    median = float(np.median(every))
    full = {w: table.get(w, ({}, np.array([median]))) for w in range(1, n_workers + 1)}
    medians = {w: ({}, np.array([float(np.median(rows[1]))])) for w, rows in full.items()}
    return (simulate.ComputeModel(kind="trace", trace=full, spec=f"trace:{path.name}"),
            simulate.ComputeModel(kind="trace", trace=medians, spec="median measured compute"))


#: the keys of a ``[clusters.NAME]`` table (``gdcode cluster up``'s options)
CLUSTER_KEYS = ("hosts", "slots", "bandwidth", "latency")


def used_clusters(cfg: dict, specs: list[RunSpec]) -> list[str]:
    """The config's clusters that runs to be done use, in order of first use.

    Raises
    ------
    ConfigError
        A cluster table with an unknown key or without ``hosts``, or clusters asked for by a
        user who is not root (making one needs network namespaces).
    """
    from gdcode.errors import ConfigError

    names = list(dict.fromkeys(s.options["cluster"] for s in specs
                               if not s.skip and s.options.get("cluster") in cfg["clusters"]))
    for name in names:
        table = cfg["clusters"][name]
        unknown = [k for k in table if k not in CLUSTER_KEYS]
        if unknown or "hosts" not in table:
            raise ConfigError(f"[clusters.{name}]: give hosts (and optionally slots, bandwidth, latency); "
                              f"unknown: {', '.join(unknown) or 'none'}")
    if names and os.geteuid() != 0:
        raise ConfigError(f"the emulated cluster(s) {', '.join(names)} need root (network namespaces): run as root, "
                          "or leave out their runs with --setup or a config without them")
    return names


def make_cluster(name: str, table: dict) -> bool:
    """Bring the emulated cluster ``name`` up as ``table`` says; False when it was already up
    (it is then used as it is and left up)."""
    from gdcode.cluster import emulate

    if name in emulate.names():
        c = emulate.load(name)
        have = {"hosts": len(c.hosts), "slots": c.slots, "bandwidth": c.bandwidth, "latency": c.latency or None}
        want = {"hosts": int(table["hosts"]), "slots": int(table.get("slots", 1)), "bandwidth": table.get("bandwidth"),
                "latency": table.get("latency") or None}
        if have != want:
            raise RuntimeError(f"the emulated cluster {name} is up with {have}, not the config's {want}: "
                               f"remove it (gdcode cluster down {name}) or rename the config's cluster")
        print(f"using the emulated cluster {name} that is already up (gdcode cluster status {name})", flush=True)
        return False
    emulate.up(name, hosts=int(table["hosts"]), slots=int(table.get("slots", 1)), bandwidth=table.get("bandwidth"),
               latency=table.get("latency"))
    print(f"made the emulated cluster {name}: {table}", flush=True)
    return True


def _remove_clusters(names: list[str]) -> None:
    from gdcode.cluster import emulate

    for cluster in names:
        emulate.down(cluster)
        print(f"removed the emulated cluster {cluster}", flush=True)


def network_of(spec: RunSpec, cfg: dict, model_bytes: int):
    """The simulator's links for a run on a shaped cluster of the config (None otherwise)."""
    from gdcode import simulate

    table = cfg["clusters"].get(spec.options.get("cluster"))
    if not table or not table.get("bandwidth"):
        return None
    return simulate.Network(latency=float(table.get("latency") or 0.0),
                            bandwidth=simulate.parse_rate(table["bandwidth"]),
                            model_bytes=model_bytes, reply_bytes=model_bytes)


def message_bytes(run) -> int:
    """Bytes of one model message of ``run``: what rank 0 sent, over the messages it sent."""
    sent = run.summary.get("bytes", {}).get("sent") or []
    W, iters = run.metadata["options"]["workers"], run.summary["iterations"]
    return int(sent[0] / max(1, W * iters)) if sent and sent[0] else 0


def predict(spec: RunSpec, runs_dir: Path, cfg: dict | None = None) -> dict:
    """Simulated seconds per iteration of a coded run: on the run's own delays (its seed
    replayed, its measured compute) and on 20000 fresh draws (each worker's median compute)."""
    from gdcode import problem, rundir, simulate

    run = spec.run
    options = rundir.read_options(run.path)
    if options.mode != "coded":
        return {}
    code = problem.build_code(options, n_train=run.metadata.get("dataset", {}).get("rows_train"))
    delay = problem.build_delay(options)
    W, iters = options.workers, run.summary["iterations"]
    same, bulk = _compute_trace(runs_dir / f"{spec.name}.compute.csv", W)
    network = network_of(spec, cfg, message_bytes(run)) if cfg else None
    wait = {"network": network, "wait": options.wait, "min_replies": options.min_replies}
    replayed = simulate.simulate(code, delay, draws=iters, compute=same, replay=True, **wait)
    fresh = simulate.simulate(code, delay, draws=BULK_DRAWS, compute=bulk, seed=options.seed + 1, **wait)
    return {"load": float(code.load().mean()), "sim_same_delays": float(replayed.times.mean()),
            "sim_expected": float(fresh.times.mean()), "sim_times": fresh.times,
            **({"network": network.describe()} if network else {})}


def time_to(run, target: float | None, metric: str = "train_loss") -> float | None:
    """Elapsed seconds at the first evaluation whose ``metric`` reaches ``target``: at or below it
    for a loss, at or above it for an accuracy or AUC."""
    if target is None:
        return None
    higher = metric.endswith(("accuracy", "auc"))
    for m in run.metrics:
        v = m.get(metric)
        if v is not None and (v >= target if higher else v <= target):
            return float(m["elapsed"])
    return None


def make_row(spec: RunSpec, target: float | None, pred: dict, target_accuracy: float | None = None) -> dict:
    s, opts = spec.run.summary, spec.run.metadata["options"]
    per_it = s["elapsed"] / s["iterations"] if s["iterations"] else float("nan")
    steps = s.get("worker_steps")
    if opts.get("mode", "coded") != "coded" and steps and sum(steps):
        per_it = s["elapsed"] * len(steps) / sum(steps)  # seconds per step of a worker, as one iteration of coded
    row = {"name": spec.name, "key": spec.key or spec.name, "seed": opts.get("seed"), "group": spec.group,
           "label": spec.label, "mode": opts.get("mode", "coded"),
           "scheme": opts.get("scheme"), "workers": opts["workers"], "stragglers": opts.get("stragglers"),
           "collect": opts.get("collect"), "iterations": s["iterations"], "elapsed": s["elapsed"],
           "seconds_per_iteration": per_it, "final_train_loss": s["train_loss"],
           "test_accuracy": s.get("test_accuracy"), "test_auc": s.get("test_auc"), "test_rmse": s.get("test_rmse"),
           "time_to_target": time_to(spec.run, target),
           "time_to_accuracy": time_to(spec.run, target_accuracy, "test_accuracy")}
    row.update({k: v for k, v in pred.items() if k != "sim_times"})
    if opts.get("cluster"):
        row["cluster"] = opts["cluster"]
    return row


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


#: per-run numbers that ``results.md`` averages over the seeds of a configuration
SEED_STATS = ("load", "iterations", "elapsed", "seconds_per_iteration", "sim_same_delays", "sim_expected",
              "final_train_loss", "test_accuracy", "test_auc", "test_rmse", "time_to_target", "time_to_accuracy")


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per configuration (the runs of one ``key``, which differ only in their seed).

    Every number of :data:`SEED_STATS` becomes its mean over the seeds (over the finite values;
    ``time_to_target`` over the seeds that reached the target, counted in ``reached``) and
    ``NAME_sd``, the sample standard deviation (None with one value). ``seeds`` counts the runs,
    ``seed_values`` lists their seeds.
    """
    out = []
    for key in dict.fromkeys(r.get("key") or r["name"] for r in rows):
        members = [r for r in rows if (r.get("key") or r["name"]) == key]
        first = members[0]
        agg = {f: first.get(f) for f in ("group", "label", "mode", "scheme", "workers", "stragglers", "collect")}
        agg.update(name=key, seeds=len(members), seed_values=[r.get("seed") for r in members],
                   reached=sum(r.get("time_to_target") is not None for r in members),
                   reached_accuracy=sum(r.get("time_to_accuracy") is not None for r in members))
        for f in SEED_STATS:
            vals = [float(r[f]) for r in members if r.get(f) is not None and math.isfinite(float(r[f]))]
            agg[f] = statistics.fmean(vals) if vals else None
            agg[f"{f}_sd"] = statistics.stdev(vals) if len(vals) > 1 else None
        out.append(agg)
    return out


def _pm(mean, sd, digits: int = 4) -> str:
    """``mean ± sd`` (just the mean when there is no sd)."""
    return _fmt(mean, digits) if sd is None or mean is None else f"{_fmt(mean, digits)} ± {_fmt(sd, 2)}"


def markdown_table(rows: list[dict], target: float | None, group_by: str,
                   target_accuracy: float | None = None) -> str:
    """The results table: one line per configuration, speedups against uncoded in the same group.

    Runs repeated over seeds are one line: each number the mean ± the sample standard deviation
    over the seeds (:func:`aggregate`), with a ``seeds`` column; speedups are ratios of means.
    With ``target`` (a training loss) and ``target_accuracy`` (a test accuracy), the time to
    reach each, and its speedup against uncoded.
    """
    confs = aggregate(rows)
    seeded = any(c["seeds"] > 1 for c in confs)
    test_key = next((k for k in ("test_auc", "test_accuracy", "test_rmse") if any(r.get(k) is not None
                                                                                 for r in rows)), None)
    #: (field, its reached count, column title) of each target asked for
    goals = [g for g in (("time_to_target", "reached", f"time to loss {target:g} (s)") if target is not None else None,
                         ("time_to_accuracy", "reached_accuracy", f"time to accuracy {target_accuracy:g} (s)")
                         if target_accuracy is not None else None) if g]
    head = [group_by, "run"] + (["seeds"] if seeded else []) + [
        "load", "iterations", "s/iteration (async: per worker step)", "simulated, same delays",
        "simulated, 20000 draws", "final train loss"]
    if test_key:
        head.append(test_key.replace("_", " "))
    head += [title for _, _, title in goals]
    head.append("speedup vs uncoded (s/iteration)")
    head += [f"speedup vs uncoded ({title.split(' (')[0]})" for _, _, title in goals]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in confs:
        base = next((b for b in confs if b["group"] == c["group"] and b["mode"] == "coded"
                     and b["scheme"] == "uncoded"), None)
        its = c["iterations"]
        cells = [_fmt(c["group"]), c["label"]] + ([str(c["seeds"])] if seeded else []) + [
            _fmt(c.get("load"), 3), str(int(its)) if its is not None and float(its).is_integer() else _fmt(its),
            _pm(c["seconds_per_iteration"], c["seconds_per_iteration_sd"]),
            _pm(c.get("sim_same_delays"), c.get("sim_same_delays_sd")), _fmt(c.get("sim_expected")),
            _pm(c["final_train_loss"], c["final_train_loss_sd"], 5)]
        if test_key:
            cells.append(_pm(c.get(test_key), c.get(f"{test_key}_sd")))
        for field_, reached, _ in goals:
            if not c[reached]:
                cells.append("not reached")
            else:
                some = f" ({c[reached]}/{c['seeds']} reached)" if c[reached] < c["seeds"] else ""
                cells.append(_pm(c[field_], c[f"{field_}_sd"]) + some)
        ok = base and base["seconds_per_iteration"] and c["seconds_per_iteration"]
        cells.append(f"{base['seconds_per_iteration'] / c['seconds_per_iteration']:.2f}×" if ok else "–")
        for field_, _, _ in goals:
            ok = base and base[field_] and c[field_]
            cells.append(f"{base[field_] / c[field_]:.2f}×" if ok else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_figures(specs: list[RunSpec], cfg: dict, out: Path, sims: dict) -> list[tuple[str, Path]]:
    """The experiment's figures; returns (caption, path) pairs."""
    from gdcode import plot

    exp = cfg["experiment"]
    group_by = _dest(exp.get("group_by", "workers"))
    figs = []
    groups = list(dict.fromkeys(s.group for s in specs if s.run is not None))
    common = cfg["common"]
    for g in groups:
        members = [s for s in specs if s.run is not None and s.group == g]
        runs = [s.run for s in members]
        n_seeds = {s.key: sum(m.key == s.key for m in members) for s in members}
        seeded = any(n > 1 for n in n_seeds.values())
        labels = [s.label + (f" ({n_seeds[s.key]} seeds)" if n_seeds[s.key] > 1 else "") for s in members]
        firsts = [s for s in members if s is next(m for m in members if m.key == s.key)]  # one run per key
        tag = _safe(f"{group_by}{g}") if g is not None else "all"
        delays = ", ".join(sorted({str(shown(s.options.get("delay", common.get("delay", "none")))) for s in members}))
        what = f"{group_by} = {g}, " if g is not None else ""
        for fig_spec in exp.get("figures", [{"x": "elapsed", "y": "train_loss"}]):
            x, y = fig_spec.get("x", "elapsed"), fig_spec.get("y", "train_loss")
            if not any(r.column(y).size and not all(math.isnan(v) for v in r.column(y)) for r in runs):
                continue
            path = out / f"{y}_vs_{x}_{tag}.png"
            plot.plot_metric(runs, path, x=x, y=y, labels=labels, band="range" if seeded else None,
                             title=f"{exp.get('short', '')} {what}{'' if group_by == 'delay' else 'delay ' + delays}"
                             .strip().rstrip(","))
            over = ", mean and range over the seeds" if seeded else ""
            figs.append((f"{plot.Y_LABELS.get(y, y)} against {plot.X_LABELS.get(x, x)}, {what.rstrip(', ')}{over}",
                         path))
        path = out / f"iteration_times_{tag}.png"
        extra = {f"sim: {s.label}": sims[s.name] for s in firsts if s.name in sims}
        plot.plot_iteration_times(runs, path, labels=labels, extra=extra, pool_seeds=seeded,
                                  title=f"iteration times, {what}measured and simulated (hatched)")
        pooled = ", the seeds pooled" if seeded else ""
        figs.append((f"iteration times per run and as simulated (20000 draws), {what.rstrip(', ')}{pooled}", path))
        heat = [s for s in firsts if (s.options.get("scheme") if s.options.get("mode", "coded") == "coded"
                                      else s.options.get("mode")) in exp.get("heatmap", []) and s.run.workers]
        if heat:
            path = out / f"workers_{tag}.png"
            plot.plot_workers([s.run for s in heat], path, labels=[s.label for s in heat])
            first_seed = f" (seed {heat[0].seed})" if seeded else ""
            figs.append((f"per-worker reply arrivals and statuses, {what.rstrip(', ')}{first_seed}", path))
    return figs


def write_report(specs, cfg, out: Path, figs, argv: list[str], started: float) -> Path:
    """``results.md`` and ``results.json``."""
    import gdcode

    exp = cfg["experiment"]
    target = exp.get("target_loss")
    group_by = _dest(exp.get("group_by", "workers"))
    rows = [s.row for s in specs if s.run is not None]
    lines = [f"# {exp.get('title', out.name)}", "",
             f"Made by `{shlex.join(argv)}` on {datetime.date.today().isoformat()} (gdcode {gdcode.__version__}, "
             f"{os.cpu_count()} cores, {time.monotonic() - started:.0f} s).", ""]
    if exp.get("description"):
        lines += [exp["description"].strip(), ""]
    seeds = seeds_of(cfg)
    shared = shlex.join(cli_args({_dest(k): shown(v) for k, v in cfg["common"].items() if not (seeds and k == "seed")}))
    lines += [f"Options shared by every run: `{shared}`.", ""]
    if seeds:
        lines += [f"Every run was repeated with each of the seeds {', '.join(map(str, seeds))} (data, initial point, "
                  "codes and delays all follow the seed): a number in the table is the mean ± the sample standard "
                  "deviation over the seeds, a speedup the ratio of the means; a figure draws each run's mean "
                  "over the seeds with a band from the lowest to the highest.", ""]
    lines += ["Seconds per iteration are real wall-clock (`elapsed` / iterations; in an asynchronous mode, "
              "`elapsed` over the mean number of steps a worker took, and *iterations* counts every worker's "
              "steps). *Simulated, same delays* "
              "replays each run's own delays (its seed) with its measured compute times through "
              "`gdcode.simulate`; *simulated, 20000 draws* is the simulator's expected value under the same "
              "delay model.", ""]
    lines += [markdown_table(rows, target, group_by, exp.get("target_accuracy")), ""]
    skipped = list({s.key or s.name: s for s in specs if s.skip}.values())  # once per seeded run
    if skipped:
        lines += ["Not run:", ""] + [f"- {s.key or s.name}: {s.skip}" for s in skipped] + [""]
    for caption, path in figs:
        lines += [f"![{caption}]({path.name})", "", f"*{caption}*", ""]
    md = out / "results.md"
    md.write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"title": exp.get("title"), "seeds": seeds, "rows": rows,
                                                  "configurations": aggregate(rows),
                                                  "skipped": {s.key or s.name: s.skip for s in skipped}}, indent=2,
                                                 default=str) + "\n")
    return md


def parse_set(items: list[str]) -> dict:
    """``--set key=value`` pairs, values read as TOML scalars where they parse."""
    from gdcode.errors import ConfigError

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not of the form option=value")
        try:
            out[_dest(key.strip())] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[_dest(key.strip())] = raw
    return out


def main(name: str, doc: str | None = None, argv: list[str] | None = None) -> int:
    """Run the experiment ``name``: parse the command line, run, simulate, plot, tabulate."""
    from gdcode.errors import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"experiments/{name}.py",
                                 description=" ".join(doc.strip().split("\n\n")[0].split()) if doc else None)
    ap.add_argument("--out", default=f"experiment-results/{name}", help="output folder")
    ap.add_argument("--config", default=str(HERE / f"{name}.toml"), help="experiment TOML")
    ap.add_argument("--quick", action="store_true", help="the [quick] sizes of the config (a smoke run)")
    ap.add_argument("--force", action="store_true", help="redo runs whose results are already in --out")
    ap.add_argument("--dataset", default=None, help="dataset of every run (e.g. a prepared directory)")
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                    help="override a run option of every run (repeatable)")
    ap.add_argument("--setup", default=None, metavar="LABEL[,LABEL...]",
                    help="run these [[setups]] of the config only (an optional one runs only when named)")
    ap.add_argument("--seeds", default=None, metavar="N[,N...]",
                    help="repeat every run once per seed (replaces the config's seeds; --set seed=N runs one)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    try:
        overrides = parse_set(args.set)
        if args.dataset:
            overrides["dataset"] = args.dataset
        if args.seeds is not None:
            try:
                overrides["seeds"] = [int(v) for v in args.seeds.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"--seeds {args.seeds!r}: give integers separated by commas, e.g. 0,1,2") from None
        cfg = load_config(Path(args.config), quick=args.quick, overrides=overrides)
        if args.setup:
            cfg["experiment"]["chosen_setups"] = [v.strip() for v in args.setup.split(",") if v.strip()]
        out = Path(args.out)
        runs_dir = out / "runs"
        specs = expand(cfg)
        for spec in specs:
            check_runnable(spec, runs_dir)
        clusters = used_clusters(cfg, specs)
        runs_dir.mkdir(parents=True, exist_ok=True)
    except ConfigError as exc:
        print(f"experiments/{name}.py: error: {exc}", file=sys.stderr)
        return 2
    todo = [s for s in specs if not s.skip]
    for s in {s.key or s.name: s for s in specs if s.skip}.values():
        print(f"skipping {s.key or s.name}: {s.skip}", flush=True)
    failed = []
    target = cfg["experiment"].get("target_loss")
    sims: dict = {}
    made: list[str] = []  # clusters this script made and has not removed yet
    ready: set[str] = set()  # clusters up for the runs (made here, or found up)
    last_use = {s.options.get("cluster"): i for i, s in enumerate(todo, 1)}
    try:
        for i, spec in enumerate(todo, 1):
            cluster = spec.options.get("cluster")
            if cluster in clusters and cluster not in ready:
                try:
                    if make_cluster(cluster, cfg["clusters"][cluster]):
                        made.append(cluster)
                except (RuntimeError, ConfigError) as exc:
                    print(f"experiments/{name}.py: {exc}", file=sys.stderr, flush=True)
                    return 1
                ready.add(cluster)
            print(f"[{i}/{len(todo)}] {spec.name}: gdcode run {shlex.join(cli_args(spec.options))}", flush=True)
            try:
                print(f"      {execute(spec, runs_dir, force=args.force)}", flush=True)
            except RuntimeError as exc:
                print(f"      {exc}", file=sys.stderr, flush=True)
                failed.append(spec.name)
                continue
            pred = predict(spec, runs_dir, cfg)
            if "sim_times" in pred:
                sims[spec.name] = pred["sim_times"]
            spec.row = make_row(spec, target, pred, cfg["experiment"].get("target_accuracy"))
            if cluster in made and last_use[cluster] == i:  # its last run: remove it before the next is made
                _remove_clusters([cluster])
                made.remove(cluster)
    finally:
        _remove_clusters(made)
    if not any(s.run is not None for s in specs):
        print(f"experiments/{name}.py: no run finished", file=sys.stderr)
        return 1
    figs = make_figures(specs, cfg, out, sims)
    md = write_report(specs, cfg, out, figs, [f"experiments/{name}.py", *argv], started)
    rows = [s.row for s in specs if s.run is not None]
    print()
    print(markdown_table(rows, target, _dest(cfg["experiment"].get("group_by", "workers")),
                         cfg["experiment"].get("target_accuracy")))
    print(f"\nwrote {md} and {len(figs)} figures in {out}")
    if failed:
        print(f"experiments/{name}.py: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
