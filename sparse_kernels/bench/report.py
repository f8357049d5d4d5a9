"""The study's outputs: results.json, results.md and one plot of speed-up vs
sparsity per (op, hidden, batch) with the crossover marked."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .storages import BASELINE, TORCH_SPARSE
from .study import _nines, series


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _percent(s: float) -> str:
    return f"{100 * s:.4g}%"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.4g}"


def plot_name(op: str, hidden: int, batch: int) -> str:
    return f"{op}_h{hidden}_b{batch}.png"


def markdown(doc: dict) -> str:
    m = doc["machine"]
    storages = doc["storages"]
    others = [n for n in storages if n != BASELINE and storages[n]["available"]]
    ours = [n for n in others if storages[n]["ours"] and TORCH_SPARSE in others]
    lines = ["# sparse_kernels kernel study", "",
             f"Command: `{doc.get('command') or 'run_study(...)'}`", "",
             f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['threads']} torch threads; "
             f"torch {m['torch_version']}, CPU path {m['build_info'].get('cpu_path_active')}, tiles "
             f"{m['build_info'].get('cpu_tile_kernels')}; load average "
             f"{_load(doc.get('load_average_start'))} at the start, {_load(doc.get('load_average_end'))} at the end; "
             f"{doc['started']}, {doc.get('duration_s', float('nan')):.0f} s.", "",
             "Each cell: median time in ms and, in brackets, the speed-up over dense torch (its faster layout); "
             "all storages of a row were timed in the same interleaved rounds, except those over "
             f"{doc['config']['slow_ratio']:g}x slower than dense, timed once (marked `1x`: one call).", ""]
    missing = [f"{storages[n]['label']} ({storages[n]['reason']})" for n in storages if not storages[n]["available"]]
    if missing:
        lines += ["Not measured: " + "; ".join(missing) + ".", ""]
    groups = series(doc)
    for op, description in doc["ops"].items():
        lines += [f"## {op}: {description}", ""]
        header = ["H", "batch", "sparsity", "nnz", "dense ms (layout)"] + [storages[n]["label"] for n in others] + \
                 [f"{storages[n]['label']} vs torch.sparse" for n in ours]
        lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
        for (g_op, hidden, batch), rows in groups.items():
            if g_op != op:
                continue
            for r in rows:
                dense = r["times"][BASELINE]
                cells = [str(hidden), str(batch), _percent(r["sparsity"]), str(r["nnz"]),
                         f"{_ms(dense['median_s'])} ({dense['layout']})"]
                for n in others:
                    t = r["times"].get(n, {})
                    once = " 1x" if t.get("timed_once") else ""
                    cells.append(f"{_ms(t['median_s'])} ({r['speedup_vs_dense'][n]:.3g}x){once}" if "median_s" in t
                                 else "n/a")
                for n in ours:
                    ratio = r["speedup_vs_torch_sparse"].get(n)
                    cells.append(f"{ratio:.3g}x" if ratio is not None else "n/a")
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Crossover: the sparsity above which each storage beats dense", "",
              "Interpolated between the last measured sparsity slower than dense and the next (log speed-up "
              "linear in -log10(1 - sparsity)); `< x` : faster at every measured sparsity; `none`: slower at "
              "the highest; `*`: the speed-up crosses 1 more than once (noise or a real dip).", ""]
    header = ["op", "H", "batch"] + [storages[n]["label"] for n in others]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_key = {}
    for c in doc["crossovers"]:
        by_key.setdefault((c["op"], c["hidden"], c["batch"]), {})[c["storage"]] = c
    for (op, hidden, batch), row in by_key.items():
        lowest = min(r["sparsity"] for r in groups[op, hidden, batch])
        cells = [op, str(hidden), str(batch)]
        for n in others:
            c = row.get(n)
            cells.append("n/a" if c is None else _crossover_text(c, lowest))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _load(values) -> str:
    return "n/a" if not values else ", ".join(f"{v:.2f}" for v in values)


def _crossover_text(c: dict, lowest: float) -> str:
    mark = "*" if c["sign_changes"] > 1 else ""
    if c["kind"] == "crossing":
        return _percent(c["sparsity"]) + mark
    if c["kind"] == "always_faster":
        return f"< {_percent(lowest)}" + mark
    return ("none" if c["kind"] == "never_faster" else "n/a") + mark


def plot(doc: dict, folder: Path) -> list[str]:
    """One PNG per (op, hidden, batch); returns their paths relative to the output folder."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    storages = doc["storages"]
    others = [n for n in storages if n != BASELINE and storages[n]["available"]]
    crossings = {(c["op"], c["hidden"], c["batch"], c["storage"]): c for c in doc["crossovers"]}
    written = []
    for (op, hidden, batch), rows in series(doc).items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        xs_all = [_nines(r["sparsity"]) for r in rows]
        for index, name in enumerate(others):
            pts = [(_nines(r["sparsity"]), r["speedup_vs_dense"][name]) for r in rows
                   if name in r["speedup_vs_dense"]]
            if not pts:
                continue
            color = f"C{index}"
            ax.plot(*zip(*pts), marker="o", color=color, label=storages[name]["label"])
            c = crossings.get((op, hidden, batch, name))
            if c and c["kind"] == "crossing":
                u = _nines(c["sparsity"])
                ax.axvline(u, color=color, linestyle=":", linewidth=1)
                ax.plot([u], [1.0], marker="X", markersize=9, color=color, linestyle="none")
                ax.annotate(_percent(c["sparsity"]), (u, 1.0), textcoords="offset points", xytext=(4, 6 + 10 * index),
                            color=color, fontsize=8)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(xs_all, [_percent(r["sparsity"]) for r in rows], rotation=45, fontsize=8)
        ax.set_xlabel("sparsity (axis: -log10(1 - sparsity))")
        ax.set_ylabel("speed-up over dense torch")
        steps = rows[0]["steps"]
        ax.set_title(f"{op}, H={hidden}, batch={batch}" + (f", T={steps}" if steps else "") +
                     f", {doc['machine']['threads']} threads", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = plot_name(op, hidden, batch)
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        written.append(f"{folder.name}/{name}")
    return written


def _jsonable(value):
    """NaN/inf become null: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_outputs(doc: dict, out_dir, *, plots: bool = True) -> dict:
    """results.json, results.md and (with matplotlib) plots/*.png in out_dir.
    Returns {"json", "markdown", "plots"} paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc["plots"] = []
    if plots:
        try:
            doc["plots"] = plot(doc, out / "plots")
        except ImportError as exc:
            doc["plot_error"] = f"no plots: {exc} (pip install matplotlib)"
    _write_atomic(out / "results.json", json.dumps(_jsonable(doc), indent=1, allow_nan=False) + "\n")
    _write_atomic(out / "results.md", markdown(doc))
    return {"json": out / "results.json", "markdown": out / "results.md", "plots": [out / p for p in doc["plots"]]}
