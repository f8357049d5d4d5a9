"""Check the ptxas resource report (nvcc -Xptxas -v) that the CUDA build
writes into its log: every kernel, for every architecture, must use no local
memory (0 bytes spill stores and loads, 0 bytes stack frame).

    python tests/emu/ptxas_report.py build/build.log     # exit 1 on a violation
    python tests/emu/ptxas_report.py --allow-empty LOG   # a build that recompiled no .cu passes
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

_ENTRY = re.compile(r"ptxas info\s*: Compiling entry function '([^']+)' for '(sm_\d+a?)'")
_PROPS = re.compile(r"ptxas info\s*: Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"ptxas info\s*: Used (\d+) registers")


@dataclass
class KernelReport:
    name: str
    arch: str
    stack_frame: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    registers: int | None = None

    @property
    def problems(self) -> list[str]:
        if self.spill_stores is None:
            return ["no 'Function properties' line"]
        out = []
        if self.spill_stores or self.spill_loads:
            out.append(f"{self.spill_stores} bytes spill stores, {self.spill_loads} bytes spill loads")
        if self.stack_frame:
            out.append(f"{self.stack_frame} bytes stack frame (local memory)")
        return out


def parse(text: str) -> list[KernelReport]:
    """The entry functions of a ptxas -v report, in order, with their figures."""
    reports: list[KernelReport] = []
    current: KernelReport | None = None
    expect_frame_for: str | None = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = KernelReport(m.group(1), m.group(2))
            reports.append(current)
            expect_frame_for = None
        elif m := _PROPS.search(line):
            expect_frame_for = m.group(1)
        elif (m := _FRAME.search(line)) and expect_frame_for is not None:
            if current is not None and expect_frame_for == current.name:
                current.stack_frame, current.spill_stores, current.spill_loads = map(int, m.groups())
            expect_frame_for = None
        elif (m := _REGS.search(line)) and current is not None and current.registers is None:
            current.registers = int(m.group(1))
    return reports


def violations(reports: list[KernelReport]) -> list[str]:
    return [f"{r.name} ({r.arch}): {p}" for r in reports for p in r.problems]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    allow_empty = "--allow-empty" in args
    args = [a for a in args if a != "--allow-empty"]
    if len(args) != 1:
        print(__doc__)
        return 2
    reports = parse(Path(args[0]).read_text(errors="replace"))
    if not reports:
        print(f"{args[0]}: no ptxas report (no CUDA source recompiled, or built without -Xptxas -v)")
        return 0 if allow_empty else 1
    bad = violations(reports)
    archs = sorted({r.arch for r in reports})
    kernels = sorted({r.name for r in reports})
    for line in bad:
        print("ptxas:", line)
    print(f"ptxas report: {len(kernels)} kernels x {', '.join(archs)}: "
          + ("no local memory" if not bad else f"{len(bad)} violations"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
