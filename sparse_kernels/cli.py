"""`sparse-rnn` command line (also `python -m sparse_kernels`).

demo       the main job: dense vs sparse LSTM on the embedded synthetic language
train-lm   word-level language modelling (PTB-format folder, or the synthetic language)
train-cls  text classification (label<TAB>text file or folder, or the synthetic task)
bench      the kernel study: speed-up over dense vs sparsity for every storage

train-lm and train-cls also run data-parallel under torchrun
(`torchrun --nproc_per_node=N -m sparse_kernels train-lm ...`): gloo on CPU,
nccl with --device cuda (one GPU per rank), --batch-size is the global batch.

A mistake a user can make (missing data, empty file, unknown method,
sparsity out of range, an incompatible, foreign or corrupted checkpoint, an
output folder that cannot be written) ends with one line on stderr and exit
status 2, no traceback. A run that fails while training (a NaN/inf loss
with --nonfinite stop, a checkpoint that cannot be saved because the disk
is full) ends with one line and exit status 1; its last checkpoint is
intact.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import torch

PROG = "sparse-rnn"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _block_shape(text: str) -> tuple[int, int]:
    rows, sep, cols = text.lower().partition("x")
    try:
        shape = (int(rows), int(cols)) if sep else None
    except ValueError:
        shape = None
    if shape is None or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"must be ROWSxCOLS with positive integers, e.g. 4x4 or 1x8, got {text!r}")
    return shape


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"growth\": \"random\"}'")
    return value


def _add_run_arguments(p: argparse.ArgumentParser, *, hidden: int, layers: int, defaults) -> None:
    """The options train-lm and train-cls share; optimizer, lr, momentum,
    clip, dropout, epochs and init_scale default to ``defaults`` (an
    LMConfig or ClsConfig: one place holds each loop's defaults)."""
    from .train.loop import METHODS, NONFINITE, OPTIMIZERS, SPARSE_LR_SCALES
    from .train.models import RECURRENT
    p.add_argument("--data", help="data path (default: the embedded synthetic data)")
    p.add_argument("--model", choices=sorted(RECURRENT), default="lstm", help="recurrent layer (default lstm)")
    p.add_argument("--method", choices=METHODS, default="dense",
                   help="dense (torch.nn), static (fixed random sparse), or a sparse-training algorithm")
    p.add_argument("--sparsity", type=_sparsity, default=0.9, help="fraction of zero weights, in [0, 1)")
    p.add_argument("--init", choices=("uniform", "erdos_renyi"), default="uniform")
    p.add_argument("--init-scale", choices=("dense", "fan_in"), default=defaults.init_scale,
                   help="initial sparse values: the dense layer's bound, or that bound times sqrt(in_features / "
                        "stored entries of the row) (fan_in: pre-activations with the dense layer's variance)")
    p.add_argument("--sparse-lr-scale", choices=SPARSE_LR_SCALES, default=defaults.sparse_lr_scale,
                   help="fan_in: each sparse weight's learning rate divided by its density, so that its "
                        "outputs change as fast as the dense layer's under the same lr; sqrt_fan_in: divided "
                        "by the square root of its density; none: one lr for all")
    p.add_argument("--block-shape", type=_block_shape, default=None, metavar="ROWSxCOLS",
                   help="store the sparse recurrent weights as dense blocks of this shape (BSR), e.g. 4x4; "
                        "default: unstructured (CSR)")
    p.add_argument("--prune-rate", type=float, default=0.5)
    p.add_argument("--update-every", type=int, default=0,
                   help="steps between topology updates (0: --updates-per-epoch of them each epoch, evenly spaced)")
    p.add_argument("--updates-per-epoch", type=int, default=defaults.updates_per_epoch, metavar="N",
                   help=f"with --update-every 0: topology updates per epoch (default {defaults.updates_per_epoch})")
    p.add_argument("--method-options", type=_json_object, default={}, help="JSON object of algorithm options")
    p.add_argument("--hidden", type=int, default=hidden)
    p.add_argument("--embedding", type=int, default=None, help="default: the hidden size")
    p.add_argument("--layers", type=int, default=layers)
    p.add_argument("--depth", type=int, default=1, help="recurrence depth (rhn)")
    p.add_argument("--dropout", type=float, default=defaults.dropout)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--momentum", type=float, default=defaults.momentum, help="SGD momentum")
    p.add_argument("--clip", type=float, default=defaults.clip, help="gradient norm clip (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--resume", help="checkpoint file or run folder to continue exactly")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="also write the checkpoint every N steps (default 0: at epoch ends only)")
    p.add_argument("--nonfinite", choices=NONFINITE, default="skip",
                   help="a NaN/inf loss or gradient: skip that step (counted in metrics.csv) or stop the run "
                        "(default skip)")
    p.add_argument("--nonfinite-limit", type=int, default=10, metavar="N",
                   help="with --nonfinite skip: stop after more than N such steps in a row (default 10)")
    p.add_argument("--out", default=None, help="run folder (checkpoints, metrics.csv, best.pt)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug-topology", action="store_true",
                   help="under torchrun: check after every topology update that all ranks hold the same patterns")


def _common_config(args) -> dict:
    return dict(model=args.model, method=args.method, sparsity=args.sparsity, init=args.init,
                init_scale=args.init_scale, sparse_lr_scale=args.sparse_lr_scale,
                prune_rate=args.prune_rate, update_every=args.update_every,
                updates_per_epoch=args.updates_per_epoch, method_options=args.method_options,
                hidden_size=args.hidden, embedding_size=args.embedding or args.hidden, num_layers=args.layers,
                depth=args.depth, dropout=args.dropout, epochs=args.epochs, optimizer=args.optimizer, lr=args.lr,
                momentum=args.momentum, clip=args.clip, seed=args.seed, device=args.device,
                checkpoint_every=args.checkpoint_every, nonfinite=args.nonfinite,
                nonfinite_limit=args.nonfinite_limit, block_shape=args.block_shape)


# train-lm / train-cls options -> the run setting each one sets (the same name when absent).
_OPTION_FIELDS = {"hidden": "hidden_size", "embedding": "embedding_size", "layers": "num_layers",
                  "tie": "tie_weights"}


def _given_options(argv) -> set[str]:
    """The destinations of the options given on this command line (not
    left at their defaults): the command line parsed again with every
    default suppressed."""
    parser = build_parser()
    for sub in parser._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"func", "command"}


def _keep_saved_settings(config, args):
    """A resumed run continues with the settings it was started with: every
    run setting not given on this command line is taken from the
    checkpoint (so a later change of this program's defaults, as in issue
    #17, does not change a run half-way). Those that differ from this
    version's defaults are printed."""
    from dataclasses import fields, replace
    from .train.checkpoint import load_checkpoint
    saved = load_checkpoint(args.resume, "lm" if args.command == "train-lm" else "cls")["config"]
    # Runs saved before --sparse-lr-scale existed trained with one learning rate for all weights.
    saved.setdefault("sparse_lr_scale", "none")
    # ... and runs saved before --updates-per-epoch existed updated their topology once per epoch.
    saved.setdefault("updates_per_epoch", 1)
    # ... and runs saved before --lr-schedule existed divided the lr on a plateau.
    saved.setdefault("lr_schedule", "plateau")
    given = {_OPTION_FIELDS.get(dest, dest) for dest in _given_options(args.argv)}
    if "hidden_size" in given:
        given.add("embedding_size")  # --embedding defaults to --hidden
    names = {f.name for f in fields(config)}
    # The device is the machine's business, not the run's.
    kept = {k: (tuple(v) if isinstance(v, list) and k == "block_shape" else v) for k, v in saved.items()
            if k in names and k not in given and k != "device"}
    changed = {k: v for k, v in kept.items() if getattr(config, k) != v}
    if changed and _is_main_rank():
        print("resuming with the checkpoint's settings: " + ", ".join(f"{k}={v!r}" for k, v in changed.items()),
              file=sys.stderr)
    return replace(config, **kept)


def _summary(result) -> str:
    p = result.params
    return (f"stored parameters {p['stored']:,} of {p['dense']:,} dense; FLOPs vs dense: inference "
            f"{result.flops_ratio:.3f}x, training {result.train_flops_ratio:.3f}x; "
            f"{result.seconds_per_epoch:.1f} s/epoch; peak memory {_human(result.peak_memory)}")


def _human(n) -> str:
    from .train.report import human_bytes
    return human_bytes(n)


def _join_torchrun(args) -> bool:
    """Under torchrun, join the process group (gloo, or nccl for CUDA: each
    rank then trains on the GPU of its LOCAL_RANK). True when this call
    created it (and must destroy it)."""
    from .train import distributed
    created, args.device = distributed.init_from_env(args.device)
    return created


def _leave_torchrun(created: bool) -> None:
    if created:
        import torch.distributed as dist
        dist.destroy_process_group()


def _is_main_rank() -> bool:
    from .train import distributed
    return distributed.current().main


def cmd_train_lm(args) -> int:
    created = _join_torchrun(args)
    try:
        return _train_lm(args)
    finally:
        _leave_torchrun(created)


def _train_lm(args) -> int:
    from .train import LMConfig, load_ptb, synthetic_lm, train_lm
    config = LMConfig(**_common_config(args), batch_size=args.batch_size, bptt=args.bptt, tie_weights=args.tie,
                      lr_decay=args.lr_decay, lr_schedule=args.lr_schedule, embedding_density=args.embedding_density)
    if args.resume:
        config = _keep_saved_settings(config, args)
    config.validate()
    corpus = load_ptb(args.data) if args.data else synthetic_lm(seed=config.seed)
    result = train_lm(corpus, config, args.out or "runs/lm", resume=args.resume, progress=not args.no_progress,
                      check_topology=args.debug_topology)
    if not _is_main_rank():
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"interrupted; continue with --resume {args.out or 'runs/lm'}")
        return 130
    optimum = f" (source optimum {result.optimal_perplexity:.2f})" if result.optimal_perplexity else ""
    print(f"best valid ppl {result.best_valid_ppl:.2f}; test ppl {result.test_ppl:.2f}{optimum}")
    print(_summary(result))
    return 0


def cmd_train_cls(args) -> int:
    created = _join_torchrun(args)
    try:
        return _train_cls(args)
    finally:
        _leave_torchrun(created)


def _train_cls(args) -> int:
    from .train import ClsConfig, load_classification, synthetic_classification_data, train_cls
    config = ClsConfig(**_common_config(args), batch_size=args.batch_size, max_vocab=args.max_vocab,
                       max_length=args.max_length)
    if args.resume:
        config = _keep_saved_settings(config, args)
    config.validate()
    data = (load_classification(args.data, max_vocab=config.max_vocab, max_length=config.max_length) if args.data
            else synthetic_classification_data(seed=config.seed, max_vocab=config.max_vocab,
                                               max_length=config.max_length))
    result = train_cls(data, config, args.out or "runs/cls", resume=args.resume, progress=not args.no_progress,
                       check_topology=args.debug_topology)
    if not _is_main_rank():
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"interrupted; continue with --resume {args.out or 'runs/cls'}")
        return 130
    print(f"best valid accuracy {result.best_valid_accuracy:.4f}; test accuracy {result.test_accuracy:.4f}")
    print(_summary(result))
    return 0


def cmd_demo(args) -> int:
    from .train.demo import DemoSettings, run_demo
    settings = DemoSettings(hidden_size=args.hidden, epochs=args.epochs, train_tokens=args.train_tokens,
                            eval_tokens=args.eval_tokens, seed=args.seed, device=args.device)
    run_demo(args.out, settings, progress=not args.no_progress, plot=not args.no_plot)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def cmd_bench(args) -> int:
    from dataclasses import replace
    from .bench import StudyConfig, quick_config, run_study, write_outputs
    base = quick_config() if args.quick else StudyConfig()
    chosen = {name: tuple(value) for name, value in (("ops", args.ops), ("hidden", args.hidden),
                                                     ("sparsity", args.sparsity), ("batch", args.batch),
                                                     ("storages", args.storage)) if value}
    chosen.update({name: value for name, value in (("steps", args.steps), ("threads", args.threads),
                                                   ("seed", args.seed), ("point_time", args.point_time))
                   if value is not None})
    config = replace(base, **chosen)
    try:
        config.validate()
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    command = shlex.join([PROG, *args.argv])
    doc = run_study(config, progress=not args.no_progress, command=command)
    paths = write_outputs(doc, args.out, plots=not args.no_plot)
    print(paths["markdown"].read_text(), end="")
    print(f"wrote {paths['json']}, {paths['markdown']} and {len(paths['plots'])} plots in {args.out}"
          + (f" ({doc['plot_error']})" if doc.get("plot_error") else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from .train.demo import DemoSettings
    defaults = DemoSettings()
    demo = sub.add_parser("demo", help="dense vs 90%%-sparse LSTM on an embedded language where capacity matters")
    demo.add_argument("--out", default="runs/demo", help="folder for the runs, results.md and the plot")
    demo.add_argument("--hidden", type=_positive_int, default=defaults.hidden_size,
                      help=f"hidden size of the dense and sparse models (default {defaults.hidden_size})")
    demo.add_argument("--epochs", type=_positive_int, default=defaults.epochs,
                      help="epochs, each on freshly sampled text")
    demo.add_argument("--train-tokens", type=_positive_int, default=defaults.train_tokens,
                      help=f"training tokens per epoch (default {defaults.train_tokens:,})")
    demo.add_argument("--eval-tokens", type=_positive_int, default=defaults.eval_tokens,
                      help="validation tokens (the test split has twice as many)")
    demo.add_argument("--seed", type=int, default=defaults.seed)
    demo.add_argument("--device", default=defaults.device,
                      help="cpu, or cuda: the same demo on a GPU with cuDNN's nn.LSTM as the dense baseline")
    # One thread by default: on a small machine shared with other work, two
    # threads oversubscribe the cores (measured 2-4x slower on 2 busy cores).
    demo.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's choice)")
    demo.add_argument("--no-plot", action="store_true")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=cmd_demo)

    lm = sub.add_parser("train-lm", help="word-level language model (PTB-format folder via --data)")
    from .train import ClsConfig, LMConfig
    from .train.loop import LR_SCHEDULES
    # SGD lr 20, clip 0.25, fan-in-scaled sparse init and 1 / density lr
    # scale (LMConfig): the settings under which sparse models train as well
    # as dense (docs/quality.md).
    _add_run_arguments(lm, hidden=650, layers=2, defaults=LMConfig(epochs=40))
    lm.add_argument("--batch-size", type=int, default=20)
    lm.add_argument("--bptt", type=int, default=35)
    lm.add_argument("--tie", action="store_true", help="tie the decoder to the embedding")
    lm.add_argument("--embedding-density", type=float, default=None,
                    help="sparse word embeddings sized by word frequency (Demeester et al.), this density")
    lm.add_argument("--lr-decay", type=float, default=1.33, help="lr /= this when validation stops improving")
    lm.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=LMConfig.lr_schedule,
                    help="plateau: --lr-decay after an epoch without improvement; cosine: lr decayed every step "
                         "along a half cosine to 0 at the last step (--lr-decay unused)")
    lm.set_defaults(func=cmd_train_lm)

    cls = sub.add_parser("train-cls", help="text classification (label<TAB>text file or folder via --data)")
    _add_run_arguments(cls, hidden=256, layers=1, defaults=ClsConfig(epochs=10))
    cls.add_argument("--batch-size", type=int, default=64)
    cls.add_argument("--max-vocab", type=int, default=20_000)
    cls.add_argument("--max-length", type=int, default=100)
    cls.set_defaults(func=cmd_train_cls)

    from .bench.storages import OPS, STORAGES
    from .bench.study import DEFAULT_HIDDEN, StudyConfig
    study = StudyConfig()
    bench = sub.add_parser(
        "bench", help="kernel study: speed-up over dense vs sparsity (table, results.json, plots)",
        description="Times the ops of RNN training for every storage at every (hidden, batch, sparsity) and "
                    "writes results.json, results.md and plots/*.png with the crossover sparsity marked.")
    bench.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    bench.add_argument("--quick", action="store_true",
                       help="tiny sizes, a few seconds (checks that the study runs; figures meaningless)")
    bench.add_argument("--ops", nargs="+", choices=list(OPS), help="default: all")
    bench.add_argument("--hidden", nargs="+", type=_positive_int,
                       help=f"hidden sizes H (W_hh is 4H x H); default {list(DEFAULT_HIDDEN['products'])} "
                            f"for the products and the cell, {list(DEFAULT_HIDDEN['layers'])} for the layer ops")
    bench.add_argument("--sparsity", nargs="+", type=_sparsity,
                       help=f"fractions of zeros in [0, 1); default {list(study.sparsity)}")
    bench.add_argument("--batch", nargs="+", type=_positive_int, help=f"default {list(study.batch)}")
    bench.add_argument("--storage", nargs="+", choices=list(STORAGES),
                       help="default: all available; dense (the baseline) is always measured")
    bench.add_argument("--steps", type=_positive_int, help=f"sequence length of the layer ops (default {study.steps})")
    bench.add_argument("--threads", type=_positive_int,
                       help=f"torch threads (default {study.threads}; --quick: 1)")
    bench.add_argument("--seed", type=int)
    bench.add_argument("--point-time", type=_positive_float,
                       help=f"seconds of timing per grid point, all storages (default {study.point_time})")
    bench.add_argument("--no-plot", action="store_true")
    bench.add_argument("--no-progress", action="store_true")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    from .train import CheckpointError, DataError
    from .train.checkpoint import CheckpointWriteError
    from .train.distributed import DistributedError
    from .train.loop import ConfigError, NonFiniteError
    try:
        return args.func(args)
    except (NonFiniteError, CheckpointWriteError) as exc:  # failed while training
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except (DataError, CheckpointError, ConfigError, DistributedError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
