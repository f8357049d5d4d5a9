"""The kernel study (``sparse-rnn bench``): the matrix operations of RNN
training x hidden size x sparsity x batch x storage (dense torch, masked
dense, torch.sparse CSR, our CSR, our BSR when built), timed side by side;
speed-ups over dense and torch.sparse, and the crossover sparsity.

    from sparse_kernels.bench import StudyConfig, run_study, write_outputs
    doc = run_study(StudyConfig(ops=("forward",), hidden=(2048,), batch=(1, 16)))
    write_outputs(doc, "runs/bench")       # results.json, results.md, plots/*.png

``storages.STORAGES`` is the registry of storages; ``storages.OPS`` the ops.
"""

from .report import markdown, plot, write_outputs
from .storages import BASELINE, OPS, STORAGES, Problem, Storage, Unsupported
from .study import QUICK, SCHEMA, StudyConfig, crossover, crossovers, measure_point, quick_config, run_study

__all__ = ["BASELINE", "OPS", "QUICK", "SCHEMA", "STORAGES", "Problem", "Storage", "StudyConfig", "Unsupported",
           "crossover", "crossovers", "markdown", "measure_point", "plot", "quick_config", "run_study",
           "write_outputs"]
