"""Loading the compiled extension, with a readable error when it does not
match the installed torch (instead of an undefined-symbol trace)."""

from __future__ import annotations

import importlib
import json
import re

import torch

_REBUILD_HINT = (
    "Rebuild it against the installed torch: "
    "`pip install --no-build-isolation --force-reinstall --no-deps .` in the source tree "
    "(or `make install`)."
)


def _release(version: str) -> tuple[int, ...]:
    """'2.14.1+cu130' -> (2, 14, 1)."""
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


def _check_build_meta() -> None:
    try:
        meta = importlib.import_module("sparse_kernels._build_meta")
    except ImportError as exc:
        raise ImportError(
            "sparse_kernels was not built: its compiled extension is missing. " + _REBUILD_HINT
        ) from exc
    if _release(meta.TORCH_VERSION) != _release(torch.__version__):
        raise ImportError(
            f"sparse_kernels was compiled against torch {meta.TORCH_VERSION}, but torch "
            f"{torch.__version__} is installed. " + _REBUILD_HINT
        )
    if meta.CUDA_VERSION is not None:
        if torch.version.cuda is None:
            raise ImportError(
                f"sparse_kernels was compiled with CUDA {meta.CUDA_VERSION} kernels, but the "
                "installed torch is a CPU-only build. " + _REBUILD_HINT
            )
        if meta.CUDA_VERSION.split(".")[0] != torch.version.cuda.split(".")[0]:
            raise ImportError(
                f"sparse_kernels was compiled for CUDA {meta.CUDA_VERSION}, but torch uses CUDA "
                f"{torch.version.cuda} (a different major version). " + _REBUILD_HINT
            )


def load_extension() -> None:
    """Import sparse_kernels._C, which registers the ops under torch.ops.sparse_kernels."""
    _check_build_meta()
    try:
        importlib.import_module("sparse_kernels._C")
    except (ImportError, OSError) as exc:
        raise ImportError(
            f"sparse_kernels' compiled extension failed to load ({exc}). " + _REBUILD_HINT
        ) from exc


def build_info() -> dict:
    """What the loaded binary was compiled with.

    Keys: ``torch_version`` (the torch it was built against), ``cpu_paths`` (CPU
    code paths compiled in), ``cpu_path_active`` (the SIMD clones the loader
    picked on this CPU), ``cpu_tile_kernels`` (the kernels the float32 tiled
    products and fused LSTM loops run here: "avx512", "avx2+fma" or
    "portable"), ``cpu_blocked_view`` (whether CSRWeight.sliced_view builds
    the blocked form, read by AVX-512 kernels), ``cuda`` (whether CUDA kernels were compiled),
    ``cuda_version`` and ``cuda_archs`` (e.g. ``"8.0;9.0"``; empty without CUDA).
    """
    return json.loads(torch.ops.sparse_kernels.build_info())
