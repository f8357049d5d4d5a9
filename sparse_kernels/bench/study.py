"""The study: every op x hidden size x sparsity x batch x storage, timed.

At each grid point every storage is built from the same :class:`Problem`,
run once and checked against dense torch (a wrong kernel stops the study),
then all storages (and all layouts of each) are timed in interleaved rounds,
so that a change in the machine's load hits all of them alike; the ratios
within one point are what to read. A storage's time is the median over the
rounds of its faster layout. A storage more than ``slow_ratio`` times slower
than dense at a point keeps the one call timed before the rounds.

Timing: blocks of ``number`` calls timed with ``time.perf_counter``, the
number chosen so that a block lasts about ``block_time``.
(torch.utils.benchmark.Timer would run two warm-up calls before every
block, tripling the cost of the slow points when blocks are interleaved.)
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

import torch

import sparse_kernels
from .storages import BASELINE, LAYER_OPS, OPS, STORAGES, TORCH_SPARSE, Matrices, Problem, Unsupported

SCHEMA = "sparse_kernels.bench/1"

# The default grid (BENCHMARKS.md says how long it took on a 2-core x86 machine). H = 4096 is
# left to --hidden: near 0% sparsity one of its points takes minutes there (drawing and
# indexing 67 M entries, CSR calls of seconds), and the layer ops stop at 512: a dense 1024-wide
# layer over 35 steps at batch 64 is ~40 GFLOP per forward, a 0%-sparse torch.sparse backward
# half a minute.
DEFAULT_HIDDEN = {"products": (256, 1024, 2048), "layers": (256, 512)}
DEFAULT_SPARSITY = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
DEFAULT_BATCH = (1, 16, 64)


@dataclass
class StudyConfig:
    ops: tuple[str, ...] = tuple(OPS)
    hidden: tuple[int, ...] | None = None  # None: DEFAULT_HIDDEN by op family
    sparsity: tuple[float, ...] = DEFAULT_SPARSITY
    batch: tuple[int, ...] = DEFAULT_BATCH
    storages: tuple[str, ...] = tuple(STORAGES)
    steps: int = 35  # sequence length of the layer ops (PTB's BPTT length)
    threads: int = 2
    seed: int = 0
    block_time: float = 0.02  # seconds a timed block of calls lasts (at least one call)
    point_time: float = 0.5  # seconds of timing per grid point, all storages together ...
    min_rounds: int = 3  # ... within these bounds on the number of interleaved rounds
    max_rounds: int = 15
    # A storage over slow_ratio times slower than dense at a point (one call timed after the
    # check) keeps that one timing: it is far from any crossover, and near 0% sparsity such
    # calls take seconds at the large sizes.
    slow_ratio: float = 3.0
    quick: bool = False

    def validate(self) -> None:
        def check(name, values, ok, expected):
            if not values or not all(ok(v) for v in values):
                raise ValueError(f"{name} must be a non-empty list of {expected}, got {values!r}")
        check("ops", self.ops, lambda v: v in OPS, f"ops in {sorted(OPS)}")
        check("storages", self.storages, lambda v: v in STORAGES, f"storages in {sorted(STORAGES)}")
        if self.hidden is not None:
            check("hidden", self.hidden, lambda v: isinstance(v, int) and v > 0, "positive integers")
        check("sparsity", self.sparsity, lambda v: 0.0 <= v < 1.0, "numbers in [0, 1)")
        check("batch", self.batch, lambda v: isinstance(v, int) and v > 0, "positive integers")
        for name in ("steps", "threads", "min_rounds", "max_rounds"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.min_rounds > self.max_rounds:
            raise ValueError(f"min_rounds ({self.min_rounds}) must not exceed max_rounds ({self.max_rounds})")
        for name in ("block_time", "point_time", "slow_ratio"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive seconds, got {getattr(self, name)!r}")

    def hidden_sizes(self, op: str) -> tuple[int, ...]:
        if self.hidden is not None:
            return self.hidden
        return DEFAULT_HIDDEN["layers" if op in LAYER_OPS else "products"]

    def grid(self) -> list[tuple[str, int, int, float]]:
        """(op, hidden, batch, sparsity) of every point, in the order measured: by
        (hidden, sparsity) first, so that each weight pattern is drawn once."""
        hiddens = sorted({h for op in self.ops for h in self.hidden_sizes(op)})
        return [(op, h, b, s) for h in hiddens for s in sorted(self.sparsity) for op in self.ops
                if h in self.hidden_sizes(op) for b in self.batch]


# Tiny sizes: every op and storage, in seconds (`sparse-rnn bench --quick`, the CI check). One
# thread: on a busy shared runner a second thread waits for a core at every parallel region
# (milliseconds per call measured here), which would make the check slow, not more informative.
QUICK = StudyConfig(hidden=(32, 64), sparsity=(0.0, 0.5, 0.9, 0.99), batch=(1, 4), steps=3, threads=1,
                    block_time=0.002, point_time=0.02, min_rounds=3, max_rounds=3, quick=True)


# ---------------------------------------------------------------------------- crossover

def _nines(sparsity: float) -> float:
    """-log10(1 - sparsity): 0.9 -> 1, 0.99 -> 2; the axis the crossover is
    interpolated (and plotted) on, as speed-up grows with 1 / density."""
    return -math.log10(1.0 - sparsity)


def crossover(sparsities, speedups) -> dict:
    """The sparsity above which a storage beats dense at every measured point.

    Between the last point slower than dense and the next one, log(speed-up)
    is interpolated linearly in -log10(1 - sparsity) to where it is 0.
    Returns {"sparsity": float or None, "kind": "crossing" | "always_faster" |
    "never_faster" | "no_data", "sign_changes": int}; "always_faster": faster
    already at the lowest measured sparsity; "never_faster": slower at the
    highest. Points with a missing speed-up (None or NaN) are skipped.
    """
    points = sorted((float(s), float(r)) for s, r in zip(sparsities, speedups)
                    if r is not None and not math.isnan(r) and r > 0)
    if not points:
        return {"sparsity": None, "kind": "no_data", "sign_changes": 0}
    faster = [r >= 1.0 for _, r in points]
    sign_changes = sum(a != b for a, b in zip(faster, faster[1:]))
    slower = [i for i, f in enumerate(faster) if not f]
    if not slower:
        return {"sparsity": None, "kind": "always_faster", "sign_changes": sign_changes}
    last = slower[-1]
    if last == len(points) - 1:
        return {"sparsity": None, "kind": "never_faster", "sign_changes": sign_changes}
    (s0, r0), (s1, r1) = points[last], points[last + 1]
    u0, u1 = _nines(s0), _nines(s1)
    fraction = -math.log(r0) / (math.log(r1) - math.log(r0))
    u = u0 + fraction * (u1 - u0)
    return {"sparsity": 1.0 - 10.0 ** (-u), "kind": "crossing", "sign_changes": sign_changes}


# ---------------------------------------------------------------------------- one grid point

def _block_seconds(run, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        run()
    return (time.perf_counter() - start) / number


def _check(storage: str, layout: str, out: torch.Tensor, expected: torch.Tensor, where: str) -> None:
    out, expected = out.detach().float(), expected.detach().float()
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    if out.shape != expected.shape or not torch.allclose(out, expected, rtol=1e-3, atol=1e-4 * scale):
        diff = (out - expected).abs().max().item() if out.shape == expected.shape else "shape"
        raise RuntimeError(f"bench: storage {storage!r} ({layout}) disagrees with dense torch at {where}: "
                           f"max abs difference {diff}, shapes {tuple(out.shape)} vs {tuple(expected.shape)}")


def measure_point(problem: Problem, storages, config: StudyConfig) -> dict:
    """Build, check and time every storage at one grid point."""
    where = f"op={problem.op} hidden={problem.hidden} batch={problem.batch} sparsity={problem.sparsity}"
    timed = {}  # (storage, layout) -> run
    result = {}
    stored = {}
    expected_by_weights = {}
    for name in storages:
        storage = STORAGES[name]
        try:
            built = storage.build(problem)
        except Unsupported as exc:
            result[name] = {"unsupported": str(exc)}
            continue
        stored[name] = built.stored
        key = None if built.weights is None else name  # whose dense matrices the check runs on
        if key not in expected_by_weights:
            target = problem if built.weights is None else problem.with_weights(built.weights)
            reference = next(iter(STORAGES[BASELINE].build(target).kernels.values()))
            expected_by_weights[key] = reference.canonical(reference.run())
        for layout, kernel in built.kernels.items():
            _check(name, layout, kernel.canonical(kernel.run()), expected_by_weights[key], where)
            timed[name, layout] = kernel.run
    expected_by_weights.clear()

    first = {key: _block_seconds(run, 1) for key, run in timed.items()}
    dense_first = min(t for (name, _), t in first.items() if name == BASELINE)
    slow = {key for key, t in first.items()
            if key[0] != BASELINE and t > config.slow_ratio * dense_first and t > config.block_time}
    samples = {key: [first[key]] if key in slow else [] for key in timed}
    keys = [key for key in timed if key not in slow]
    number = {key: max(1, int(config.block_time / max(t, 1e-9))) for key, t in first.items()}
    per_round = sum(number[k] * first[k] for k in keys)
    rounds = min(config.max_rounds, max(config.min_rounds, math.ceil(config.point_time / max(per_round, 1e-9))))
    gc.disable()  # no collection inside a timed block (a full gc.collect() here costs ~0.2 s a point)
    try:
        for r in range(rounds):
            shift = r % len(keys) if keys else 0
            for key in keys[shift:] + keys[:shift]:  # a different storage first in each round
                samples[key].append(_block_seconds(timed[key], number[key]))
    finally:
        gc.enable()

    for name in storages:
        if name in result:
            continue
        layouts = {layout: statistics.median(samples[n, layout]) for (n, layout) in samples if n == name}
        best = min(layouts, key=layouts.get)
        times = samples[name, best]
        q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        result[name] = {"median_s": layouts[best], "min_s": min(times), "iqr_s": q[2] - q[0], "rounds": len(times),
                        "number": 1 if (name, best) in slow else number[name, best], "layout": best, "layouts": layouts, "stored": stored[name],
                        "timed_once": (name, best) in slow}
    return result


def _ratios(times: dict, over: str) -> dict:
    base = times.get(over, {}).get("median_s")
    if base is None:
        return {}
    return {name: base / t["median_s"] for name, t in times.items() if "median_s" in t}


# ---------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    return {"cpu_model": _cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads,
            "torch_version": torch.__version__, "sparse_kernels_version": sparse_kernels.__version__,
            "build_info": sparse_kernels.build_info(), "python": platform.python_version(),
            "platform": platform.platform()}


def _load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


# ---------------------------------------------------------------------------- the study

def run_study(config: StudyConfig, *, progress: bool = True, command: str | None = None) -> dict:
    """Measure every grid point of ``config``; returns the results document
    (what results.json holds, see :func:`sparse_kernels.bench.write_outputs`)."""
    config.validate()
    storages_info = {}
    for name in config.storages:
        reason = STORAGES[name].unavailable()
        storages_info[name] = {"label": STORAGES[name].label, "available": reason is None, "reason": reason,
                               "ours": STORAGES[name].ours}
    # dense is the baseline of every speed-up: always measured.
    measured = [BASELINE] + [n for n in config.storages if n != BASELINE and storages_info[n]["available"]]
    storages_info.setdefault(BASELINE, {"label": STORAGES[BASELINE].label, "available": True, "reason": None,
                                        "ours": False})
    grid = config.grid()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    doc = {"schema": SCHEMA, "command": command, "config": asdict(config),
           "machine": machine_info(config.threads),
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "load_average_start": _load_average(), "storages": storages_info,
           "ops": {op: OPS[op] for op in config.ops}, "results": []}
    try:
        from tqdm import tqdm
        bar = tqdm(grid, desc="bench", unit="point", disable=not progress, leave=False)
        with warnings.catch_warnings():
            # torch.sparse's notices (beta CSR support, invariant checks off): once is enough.
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
            matrices = None
            for op, hidden, batch, sparsity in bar:
                bar.set_postfix_str(f"{op} H={hidden} B={batch} s={sparsity:g}")
                if matrices is None or (matrices.hidden, matrices.sparsity) != (hidden, sparsity):
                    matrices = None  # free the previous pattern first
                    matrices = Matrices(hidden, sparsity, seed=config.seed)
                problem = Problem(op, hidden, sparsity, batch, config.steps, seed=config.seed, matrices=matrices)
                times = measure_point(problem, measured, config)
                doc["results"].append({
                    "op": op, "hidden": hidden, "batch": batch, "sparsity": sparsity,
                    "steps": config.steps if op in LAYER_OPS else None,
                    "nnz": problem.nnz, "shape": [4 * hidden, hidden], "times": times,
                    "speedup_vs_dense": _ratios(times, BASELINE),
                    "speedup_vs_torch_sparse": _ratios(times, TORCH_SPARSE)})
                del problem
    finally:
        torch.set_num_threads(previous_threads)
    doc["crossovers"] = crossovers(doc)
    doc["duration_s"] = time.perf_counter() - started
    doc["load_average_end"] = _load_average()
    return doc


def series(doc: dict):
    """{(op, hidden, batch): [result, ...] sorted by sparsity}."""
    groups = {}
    for r in doc["results"]:
        groups.setdefault((r["op"], r["hidden"], r["batch"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["sparsity"]) for k, v in groups.items()}


def crossovers(doc: dict) -> list[dict]:
    """The crossover of every measured storage but dense, per (op, hidden, batch)."""
    out = []
    for (op, hidden, batch), rows in series(doc).items():
        names = [n for n in doc["storages"] if n != BASELINE and doc["storages"][n]["available"]]
        for name in names:
            point = crossover([r["sparsity"] for r in rows],
                              [r["speedup_vs_dense"].get(name) for r in rows])
            out.append({"op": op, "hidden": hidden, "batch": batch, "storage": name, **point})
    return out


def quick_config(**overrides) -> StudyConfig:
    return replace(QUICK, **overrides)


__all__ = ["DEFAULT_BATCH", "DEFAULT_HIDDEN", "DEFAULT_SPARSITY", "QUICK", "SCHEMA", "StudyConfig", "crossover",
           "crossovers", "machine_info", "measure_point", "quick_config", "run_study", "series"]
