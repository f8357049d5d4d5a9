"""The ptxas resource report of the CUDA kernels: no local memory (spills or
stack frame) in any kernel for any compiled architecture.

The report of a source comes from the build log (build/build.log from
`make`, build.log, or $SPARSE_KERNELS_BUILD_LOG) when the log holds that
source's nvcc compile and is newer than every kernel source and header; an
incremental build's log only holds what it recompiled, so otherwise the test
compiles the source itself with nvcc and the build's flags (no GPU needed;
cached in build/ptxas/ by source hash). `make install` checks the build log
as well (tests/emu/ptxas_report.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

# As setup.py does: point torch at the toolkit before cpp_extension reads it.
if not os.environ.get("CUDA_HOME") and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
from torch.utils import cpp_extension  # noqa: E402

import sparse_kernels  # noqa: E402
from emu import ptxas_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUDA_SRC = ROOT / "csrc" / "cuda"


def _nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    candidate = Path(cuda_home, "bin", "nvcc")
    return str(candidate) if candidate.exists() else shutil.which("nvcc")


def _kernel_inputs() -> list[Path]:
    return (sorted(CUDA_SRC.glob("*.cu")) + sorted(CUDA_SRC.glob("*.cuh")) + sorted(CUDA_SRC.glob("*.h"))
            + sorted((ROOT / "csrc" / "include").rglob("*.h")))


def _from_build_log(source: Path) -> str | None:
    """The output of the build's nvcc compile of `source`, if a fresh log has it.
    Ninja prints each command as "[k/n] command" followed by its output."""
    newest_input = max(p.stat().st_mtime for p in _kernel_inputs())
    for candidate in (os.environ.get("SPARSE_KERNELS_BUILD_LOG"), ROOT / "build" / "build.log", ROOT / "build.log"):
        if not candidate or not Path(candidate).is_file() or Path(candidate).stat().st_mtime < newest_input:
            continue
        steps = Path(candidate).read_text(errors="replace").split("\n[")
        mine = [step for step in steps if "nvcc" in step.split("\n", 1)[0] and f" {source} " in step.split("\n", 1)[0]]
        if mine:
            return mine[-1]
    return None


def _report_of(source: Path, archs: list[str]) -> str:
    """ptxas -v output for one kernel source, with the build's nvcc flags."""
    from_log = _from_build_log(source)
    if from_log is not None:
        return from_log
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    includes = [CUDA_SRC, ROOT / "csrc" / "include"]
    key = hashlib.sha256(repr((archs, source.name, cpp_extension.COMMON_NVCC_FLAGS)).encode())
    for path in _kernel_inputs():
        key.update(path.read_bytes())
    cache = ROOT / "build" / "ptxas" / f"{source.stem}-{key.hexdigest()[:16]}.txt"
    if cache.exists():
        return cache.read_text()
    cache.parent.mkdir(parents=True, exist_ok=True)
    obj = cache.with_suffix(".o")
    # torch's flags for every nvcc compile of an extension (no implicit half
    # conversions, ...), then setup.py's.
    cmd = [_nvcc(), *cpp_extension.COMMON_NVCC_FLAGS, "-std=c++20", "-O3", "-Xptxas=-v", "-Werror=all-warnings", *gencode,
           *[f"-I{d}" for d in includes], "-c", str(source), "-o", str(obj)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{source.name} does not compile:\n{done.stderr}"
    obj.unlink(missing_ok=True)
    text = done.stdout + done.stderr
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, cache)
    return text


@pytest.mark.skipif(not sparse_kernels.build_info()["cuda"] or _nvcc() is None,
                    reason="CUDA kernels not compiled in this build (no CUDA torch or no nvcc)")
@pytest.mark.parametrize("source", sorted(CUDA_SRC.glob("*.cu")), ids=lambda p: p.name)
def test_no_local_memory_in_any_kernel(source):
    archs = [a.replace(".", "") for a in sparse_kernels.build_info()["cuda_archs"].replace("+PTX", "").split(";")]
    reports = ptxas_report.parse(_report_of(source, archs))
    if "__global__" in source.read_text():
        assert reports, f"no ptxas report for {source.name}"
    assert ptxas_report.violations(reports) == []
    # Every kernel was compiled for every architecture.
    by_name: dict[str, set[str]] = {}
    for r in reports:
        by_name.setdefault(r.name, set()).add(r.arch)
    assert all(found == {f"sm_{a}" for a in archs} for found in by_name.values()), by_name


SPILLING = """\
ptxas info    : Compiling entry function '_Z6kernelPf' for 'sm_90'
ptxas info    : Function properties for _Z6kernelPf
    8 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers, 360 bytes cmem[0]
ptxas info    : Compiling entry function '_Z5cleanPf' for 'sm_90'
ptxas info    : Function properties for _Z5cleanPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 360 bytes cmem[0]
"""


def test_checker_flags_spills_and_stack_frames(tmp_path):
    reports = ptxas_report.parse(SPILLING)
    assert [(r.name, r.arch, r.registers) for r in reports] == [("_Z6kernelPf", "sm_90", 255), ("_Z5cleanPf", "sm_90", 12)]
    bad = ptxas_report.violations(reports)
    assert len(bad) == 2 and all(b.startswith("_Z6kernelPf (sm_90)") for b in bad)
    log = tmp_path / "build.log"
    log.write_text(SPILLING)
    assert ptxas_report.main([str(log)]) == 1
    log.write_text(SPILLING.split("ptxas info    : Compiling entry function '_Z5clean")[0].replace("8 bytes", "0 bytes").replace("4 bytes", "0 bytes"))
    assert ptxas_report.main([str(log)]) == 0
