"""Training loops (language modelling, text classification), the embedded
synthetic data, checkpoints and run reports."""

from .checkpoint import CheckpointError, CheckpointWriteError, read_checkpoint
from .classify import ClsConfig, ClsResult, train_cls
from .data import DataError, LMCorpus, load_classification, load_ptb, synthetic_classification_data, synthetic_lm
from .lm import LMConfig, LMResult, train_lm
from .loop import METHODS, NonFiniteError

__all__ = ["CheckpointError", "CheckpointWriteError", "ClsConfig", "ClsResult", "DataError", "LMConfig", "LMCorpus",
           "LMResult", "METHODS", "NonFiniteError", "load_classification", "load_ptb", "read_checkpoint",
           "synthetic_classification_data", "synthetic_lm", "train_cls", "train_lm"]
