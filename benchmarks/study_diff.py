"""What moved between two runs of the kernel study (`sparse-rnn bench`):
reads two results.md files (the committed docs/study_full.md keeps only the
markdown) and, for every op and storage, compares each row's speed-up over
dense torch of the same run, so that the machine's speed between the runs
cancels out. Prints the median and range of new/old per (op, storage) and
the rows that moved by more than --flag either way. No thresholds decide
anything: the output is for reading.

    python benchmarks/study_diff.py docs/study_full.md runs/study-full/results.md [--flag 1.5]
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

_SPEEDUP = re.compile(r"\(([0-9.]+(?:e[-+]?[0-9]+)?)x\)")


def speedups(text: str) -> dict[tuple[str, str, int, int, str], float]:
    """{(op, storage, H, batch, sparsity): speed-up over dense} from a study's
    markdown: the per-op tables, whose cells read "ms (speed-up x)"."""
    out: dict = {}
    op, header = None, None
    for line in text.splitlines():
        if line.startswith("## "):
            name = line[3:].split(":", 1)[0]
            op = None if name.startswith("Crossover") else name
            header = None
            continue
        if op is None or not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if len(cells) != len(header):
            continue
        hidden, batch, sparsity = int(cells[0]), int(cells[1]), cells[2]
        for name, cell in zip(header[5:], cells[5:]):
            m = _SPEEDUP.search(cell)
            if m and not name.endswith("vs torch.sparse"):
                out[op, name, hidden, batch, sparsity] = float(m.group(1))
    return out


def compare(old: dict, new: dict, flag: float) -> tuple[list[list[str]], list[list[str]]]:
    """Summary rows (op, storage, points, median, min, max of new/old) and the
    rows that moved past ``flag`` (either way)."""
    ratios: dict[tuple[str, str], list[tuple[float, tuple]]] = {}
    for key in sorted(old.keys() & new.keys()):
        ratios.setdefault(key[:2], []).append((new[key] / old[key], key))
    summary, moved = [], []
    for (op, storage), pairs in ratios.items():
        values = [r for r, _ in pairs]
        summary.append([op, storage, str(len(values)), f"{statistics.median(values):.2f}",
                        f"{min(values):.2f}", f"{max(values):.2f}"])
        for r, key in pairs:
            if r > flag or r < 1 / flag:
                moved.append([op, storage, str(key[2]), str(key[3]), key[4], f"{old[key]:.3g}x",
                              f"{new[key]:.3g}x", f"{r:.2f}"])
    return summary, moved


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--flag", type=float, default=1.5, help="list rows whose new/old is past this, or 1/this")
    args = parser.parse_args(argv)
    old, new = speedups(args.old.read_text()), speedups(args.new.read_text())
    summary, moved = compare(old, new, args.flag)
    print(f"speed-up over dense, new / old, per op and storage ({len(old.keys() & new.keys())} points in both)\n")
    print(table(["op", "storage", "points", "median", "min", "max"], summary))
    print(f"\nrows that moved past {args.flag:g}x either way: {len(moved)}\n")
    if moved:
        print(table(["op", "storage", "H", "batch", "sparsity", "old", "new", "new/old"], moved))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
