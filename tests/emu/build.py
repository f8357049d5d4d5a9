"""Compile the CUDA kernels of csrc/cuda/ for the CPU through the emulator
(tests/emu/include/cuda_runtime.h, tests/emu/sk_emu.cpp) into a shared
library under build/emu/, for the emulated tests. Test-only: nothing here is
part of the shipped extension.

Every csrc/cuda/*.cu is compiled as C++ with -DSK_CUDA_EMULATION, so a new
kernel file is picked up without editing this script. A build is keyed by the
hash of its inputs and flags and reused while they do not change.

    python tests/emu/build.py [--plant-missing-barrier]   # prints the library path
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMU = ROOT / "tests" / "emu"
CUDA_SRC = ROOT / "csrc" / "cuda"
BUILD = ROOT / "build" / "emu"

# Warnings are errors here too: the emulated build compiles the very kernel
# sources that nvcc compiles with -Werror=all-warnings.
CXXFLAGS = ["-std=c++20", "-O1", "-g", "-fPIC", "-Wall", "-Wextra", "-Werror",
            "-Wno-unknown-pragmas",  # `#pragma unroll` is for nvcc
            "-DSK_CUDA_EMULATION"]
INCLUDES = [EMU / "include", CUDA_SRC, ROOT / "csrc" / "include"]


def kernel_sources() -> list[Path]:
    return sorted(CUDA_SRC.glob("*.cu"))


def _inputs() -> list[Path]:
    files = kernel_sources() + sorted(CUDA_SRC.glob("*.cuh")) + sorted(CUDA_SRC.glob("*.h"))
    files += sorted((ROOT / "csrc" / "include").rglob("*.h"))
    files += sorted(EMU.rglob("*.h")) + sorted(EMU.glob("*.cpp")) + sorted(EMU.glob("*.cu")) + [Path(__file__)]
    return files


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX) to build the CUDA emulator")
    return cxx


def build(plant_missing_barrier: str | None = None) -> Path:
    """Build (or reuse) the emulated kernels. `plant_missing_barrier`: the
    name of one csrc/cuda/*.cu whose __syncthreads and __syncwarp are
    compiled away (the planted-bug variant); None for the faithful build."""
    cxx = _compiler()
    planted = {plant_missing_barrier} if plant_missing_barrier else set()
    unknown = planted - {p.name for p in kernel_sources()}
    if unknown:
        raise ValueError(f"plant_missing_barrier: no such kernel source {sorted(unknown)}")
    key = hashlib.sha256()
    for f in _inputs():
        key.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    key.update(repr((cxx, CXXFLAGS, sorted(planted))).encode())
    out_dir = BUILD / key.hexdigest()[:16]
    library = out_dir / "libsk_cuda_emu.so"
    if library.exists():
        return library
    out_dir.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{d}" for d in INCLUDES]

    def compile_one(source: Path) -> Path:
        obj = out_dir / (source.name + ".o")
        extra = ["-DSK_EMU_PLANT_MISSING_BARRIER"] if source.name in planted else []
        language = ["-x", "c++"] if source.suffix == ".cu" else []
        cmd = [cxx, *CXXFLAGS, *extra, *includes, *language, "-c", str(source), "-o", str(obj)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"emulated build of {source.name} failed:\n{' '.join(cmd)}\n{done.stderr}")
        return obj

    sources = kernel_sources() + [EMU / "selftest_kernels.cu", EMU / "sk_emu.cpp", EMU / "emu_api.cpp"]
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        objects = list(pool.map(compile_one, sources))
    tmp = library.with_suffix(".so.tmp")
    link = [cxx, "-shared", "-o", str(tmp), *map(str, objects)]
    done = subprocess.run(link, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"linking the emulated kernels failed:\n{' '.join(link)}\n{done.stderr}")
    os.replace(tmp, library)  # atomic: a concurrent reader never sees half a library
    return library


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plant-missing-barrier", metavar="FILE.cu", default=None)
    args = parser.parse_args(argv)
    print(build(args.plant_missing_barrier))
    return 0


if __name__ == "__main__":
    sys.exit(main())
