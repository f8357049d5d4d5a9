"""Build sparse_kernels._C: CPU kernels always, CUDA kernels when the installed
torch is a CUDA build and nvcc is found (a GPU is not needed to compile).

Environment:
  SPARSE_KERNELS_CPU_ONLY=1        build the CPU kernels only
  SPARSE_KERNELS_CUDA_ARCHS="8.0;9.0"  CUDA architectures (overrides
                                   TORCH_CUDA_ARCH_LIST; default: the visible
                                   GPUs, or 8.0;9.0 when none is visible)
Install with `pip install --no-build-isolation .` so that the build uses the
torch that is already installed instead of downloading another one.
"""

import os
import shutil
from pathlib import Path

# /usr/local/bin/nvcc may be a wrapper script, from which torch would guess
# CUDA_HOME=/usr/local and then fail to link -lcudart. Point at the toolkit
# before torch.utils.cpp_extension reads the variable at import.
if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")):
    for candidate in ("/usr/local/cuda",):
        if Path(candidate, "bin", "nvcc").exists():
            os.environ["CUDA_HOME"] = candidate
            break

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
DEFAULT_CUDA_ARCHS = "8.0;9.0"

# Symbols (issue 16; README "Building by hand"): _C.so defines and exports
# nothing but its module init, PyInit__C. Without these flags it exported every
# inline function and template instantiation it compiled (std::, c10::, ours),
# each a candidate for the dynamic linker to bind to another library's copy,
# or another library to ours: what a binary then runs depends on the load
# order and on the compiler of every library in the process. Hidden
# visibility binds each call inside _C.so to the code compiled with it, the
# version script keeps the export table to PyInit__C whatever a compiler or
# header marks visible, and --exclude-libs hides whatever a static archive
# (libgcc.a, a static libstdc++) would bring in. CMakeLists.txt uses the same
# compile flags for its kernel library.
HIDDEN_VISIBILITY = ["-fvisibility=hidden", "-fvisibility-inlines-hidden"]
EXPORT_ONLY_MODULE_INIT = ["-Wl,--exclude-libs,ALL", f"-Wl,--version-script={CSRC / 'python_module.map'}"]


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _want_cuda() -> bool:
    if _truthy("SPARSE_KERNELS_CPU_ONLY"):
        return False
    if torch.version.cuda is None or cpp_extension.CUDA_HOME is None:
        return False
    return Path(cpp_extension.CUDA_HOME, "bin", "nvcc").exists() or shutil.which("nvcc") is not None


def _cuda_archs() -> str:
    archs = os.environ.get("SPARSE_KERNELS_CUDA_ARCHS") or os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not archs and torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        archs = ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    # With no GPU visible and no list, cpp_extension would crash choosing one.
    archs = archs or DEFAULT_CUDA_ARCHS
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    return archs


def _write_build_meta(with_cuda: bool, archs: str) -> None:
    """Record what the extension is built against, readable without loading it,
    so that import can explain a torch mismatch instead of an undefined symbol."""
    meta = ROOT / "sparse_kernels" / "_build_meta.py"
    meta.write_text(
        "# Written by setup.py at build time.\n"
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"CUDA_VERSION = {(torch.version.cuda if with_cuda else None)!r}\n"
        f"CUDA_ARCHS = {(archs if with_cuda else '')!r}\n"
    )


def _extension():
    with_cuda = _want_cuda()
    archs = _cuda_archs() if with_cuda else ""
    _write_build_meta(with_cuda, archs)

    sources = [str(CSRC / "python_module.cpp"), str(CSRC / "ops.cpp"), str(CSRC / "build_info.cpp")]
    sources += sorted(str(p) for p in (CSRC / "cpu").glob("*.cpp"))
    define_macros = [("SK_TORCH_VERSION", f'"{torch.__version__}"')]
    cxx_flags = ["-O3", "-fopenmp", *HIDDEN_VISIBILITY]
    nvcc_flags = ["-O3", "-Xptxas=-v", "-Werror=all-warnings", *(f"-Xcompiler={f}" for f in HIDDEN_VISIBILITY)]
    ext_cls = cpp_extension.CppExtension
    if with_cuda:
        ext_cls = cpp_extension.CUDAExtension
        sources += sorted(str(p) for p in (CSRC / "cuda").glob("*.cu"))
        sources += sorted(str(p) for p in (CSRC / "cuda").glob("*.cpp"))
        define_macros += [
            ("SK_WITH_CUDA", "1"),
            ("SK_CUDA_VERSION", f'"{torch.version.cuda}"'),
            ("SK_CUDA_ARCHS", f'"{archs}"'),
        ]
    print(f"sparse_kernels: CUDA kernels {'ON, archs ' + archs if with_cuda else 'OFF'}", flush=True)
    return ext_cls(
        name="sparse_kernels._C",
        sources=[os.path.relpath(s, ROOT) for s in sources],
        include_dirs=[str(CSRC / "include")],
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=["-fopenmp", *EXPORT_ONLY_MODULE_INIT],
    )


setup(
    packages=find_packages(include=["sparse_kernels", "sparse_kernels.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
