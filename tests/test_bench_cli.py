"""`sparse-rnn bench`: the study runs on tiny sizes and writes well-formed
outputs (every grid point, every storage, valid PNGs); the crossover
interpolation on synthetic speed-ups; a storage added to the registry is
measured, one that cannot run a point is reported, and one that computes a
wrong result stops the study. No timing is asserted."""

import itertools
import json
import math
import re
import time

import pytest
import torch

import sparse_kernels
from sparse_kernels.bench import (OPS, QUICK, SCHEMA, STORAGES, Problem, Storage, StudyConfig, Unsupported,
                                  crossover, measure_point)
from sparse_kernels.bench.storages import Built, Kernel, Matrices, build_dense
from sparse_kernels.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = main(["bench", "--quick", "--out", str(out), "--no-progress"])
    return rc, out


def test_quick_run_writes_every_output(quick_run, capsys):
    rc, out = quick_run
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    for key in ("schema", "command", "config", "machine", "started", "duration_s", "storages", "ops", "results",
                "crossovers", "plots", "load_average_start", "load_average_end"):
        assert key in doc, key
    assert doc["schema"] == SCHEMA
    assert doc["command"].startswith("sparse-rnn bench --quick")
    for key in ("cpu_model", "logical_cpus", "threads", "torch_version", "build_info"):
        assert doc["machine"][key] not in (None, ""), key
    assert doc["machine"]["threads"] == QUICK.threads
    assert doc["machine"]["build_info"] == json.loads(json.dumps(sparse_kernels.build_info()))

    # Every storage is listed; the block-sparse one is measured exactly when it is built.
    assert set(doc["storages"]) == set(STORAGES)
    bsr_built = getattr(sparse_kernels, "BSRWeight", None) is not None
    assert doc["storages"]["bsr"]["available"] == bsr_built
    if not bsr_built:
        assert "BSRWeight" in doc["storages"]["bsr"]["reason"]
    measured = {n for n, s in doc["storages"].items() if s["available"]}
    assert {"dense", "masked", "torch_sparse", "csr"} <= measured

    # Every grid point is there once, with a positive time (or a reason) for every measured storage.
    expected = {(op, h, b, s) for op, h, b, s in itertools.product(OPS, QUICK.hidden, QUICK.batch, QUICK.sparsity)}
    got = [(r["op"], r["hidden"], r["batch"], r["sparsity"]) for r in doc["results"]]
    assert len(got) == len(set(got)) and set(got) == expected
    for r in doc["results"]:
        assert set(r["times"]) == measured
        assert r["nnz"] == round((1 - r["sparsity"]) * 4 * r["hidden"] * r["hidden"])
        for name, t in r["times"].items():
            if "unsupported" in t:
                continue
            assert math.isfinite(t["median_s"]) and 0 < t["min_s"] <= t["median_s"], (r, name)
            assert t["rounds"] == 1 if t["timed_once"] else t["rounds"] >= QUICK.min_rounds
            assert t["layout"] in t["layouts"]
            assert t["median_s"] == min(t["layouts"].values())
            assert r["speedup_vs_dense"][name] == pytest.approx(r["times"]["dense"]["median_s"] / t["median_s"])
        assert r["speedup_vs_dense"]["dense"] == 1.0
        assert r["times"]["csr"]["stored"] == r["nnz"]
        if r["op"] in ("forward", "transposed"):  # both dense layouts timed, the faster one kept
            assert len(r["times"]["dense"]["layouts"]) == 2

    # One crossover per (op, hidden, batch, non-dense storage), consistent with crossover().
    keys = {(c["op"], c["hidden"], c["batch"], c["storage"]) for c in doc["crossovers"]}
    assert keys == {(op, h, b, n) for op, h, b in itertools.product(OPS, QUICK.hidden, QUICK.batch)
                    for n in measured - {"dense"}}
    c = doc["crossovers"][0]
    rows = sorted((r for r in doc["results"] if (r["op"], r["hidden"], r["batch"]) == (c["op"], c["hidden"], c["batch"])),
                  key=lambda r: r["sparsity"])
    assert crossover([r["sparsity"] for r in rows], [r["speedup_vs_dense"][c["storage"]] for r in rows]) == \
        {k: c[k] for k in ("sparsity", "kind", "sign_changes")}

    # One valid PNG per (op, hidden, batch).
    assert len(doc["plots"]) == len(OPS) * len(QUICK.hidden) * len(QUICK.batch)
    import matplotlib.image
    for rel in doc["plots"]:
        path = out / rel
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0

    # The table: a section per op, one row per grid point, the crossover table, and it was printed.
    md = (out / "results.md").read_text()
    for op in OPS:
        assert f"## {op}:" in md
    assert len(re.findall(r"^\| \d+ \| \d+ \| [\d.]+% \|", md, re.M)) == len(expected)
    assert "## Crossover" in md


def test_cli_options_choose_the_grid(tmp_path, capsys):
    rc = main(["bench", "--ops", "forward", "value_grad", "--hidden", "16", "--sparsity", "0.5", "0.9",
               "--batch", "2", "--storage", "csr", "--threads", "1", "--point-time", "0.01", "--no-plot",
               "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert sorted((r["op"], r["hidden"], r["batch"], r["sparsity"]) for r in doc["results"]) == [
        ("forward", 16, 2, 0.5), ("forward", 16, 2, 0.9), ("value_grad", 16, 2, 0.5), ("value_grad", 16, 2, 0.9)]
    assert all(set(r["times"]) == {"dense", "csr"} for r in doc["results"])  # dense: always, the baseline
    assert doc["plots"] == [] and not (tmp_path / "plots").exists()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--sparsity", "1.0"], ["--hidden", "0"], ["--ops", "nope"],
                                  ["--storage", "nope"], ["--point-time", "-1"]])
def test_cli_rejects_bad_arguments(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--out", str(tmp_path), *args])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("sparse-rnn bench: error: ")
    assert not (tmp_path / "results.json").exists()


def test_config_validation():
    StudyConfig().validate()
    with pytest.raises(ValueError, match="min_rounds"):
        StudyConfig(min_rounds=5, max_rounds=2).validate()
    with pytest.raises(ValueError, match="sparsity"):
        StudyConfig(sparsity=()).validate()
    with pytest.raises(ValueError, match="storages"):
        StudyConfig(storages=("dense", "coo")).validate()


# ---------------------------------------------------------------------------- crossover

def _sparsity_at(nines):
    return 1 - 10 ** (-nines)


def test_crossover_interpolates_log_speedup_in_nines():
    # 0.5x at 90% and 2x at 99%: log speed-up is 0 halfway in -log10(1 - s), at 1 - 10^-1.5.
    c = crossover([0.0, 0.9, 0.99], [0.25, 0.5, 2.0])
    assert c["kind"] == "crossing" and c["sign_changes"] == 1
    assert c["sparsity"] == pytest.approx(_sparsity_at(1.5))
    # 0.8x at 90%, 2x at 99%: a fraction ln(1/0.8) / ln(2/0.8) of the way.
    c = crossover([0.9, 0.99], [0.8, 2.0])
    assert c["sparsity"] == pytest.approx(_sparsity_at(1 + math.log(1.25) / math.log(2.5)))
    # Input order does not matter.
    assert crossover([0.99, 0.9], [2.0, 0.8]) == c


def test_crossover_edge_cases():
    assert crossover([0.5, 0.9], [1.2, 3.0]) == {"sparsity": None, "kind": "always_faster", "sign_changes": 0}
    assert crossover([0.5, 0.9], [0.2, 0.9]) == {"sparsity": None, "kind": "never_faster", "sign_changes": 0}
    assert crossover([0.5, 0.9], [None, float("nan")])["kind"] == "no_data"
    assert crossover([], [])["kind"] == "no_data"
    # Exactly 1x counts as not slower.
    assert crossover([0.5, 0.9], [0.5, 1.0])["sparsity"] == pytest.approx(0.9)
    # Noise: faster, slower, faster: the last crossing counts and the changes are counted.
    c = crossover([0.5, 0.75, 0.9, 0.99], [1.1, 0.9, 0.5, 2.0])
    assert c["kind"] == "crossing" and c["sign_changes"] == 2
    assert 0.9 < c["sparsity"] < 0.99
    # Missing points are skipped, not treated as slow.
    assert crossover([0.5, 0.9, 0.99], [0.5, None, 2.0])["sparsity"] == pytest.approx(
        _sparsity_at(math.log10(2) + 0.5 * (2 - math.log10(2))))


# ---------------------------------------------------------------------------- the registry

TINY = StudyConfig(block_time=1e-4, point_time=1e-3, min_rounds=1, max_rounds=2, threads=1)


@pytest.mark.parametrize("op", list(OPS))
def test_every_storage_agrees_with_dense_on_every_op(op):
    # measure_point checks each storage's result against dense torch before timing it.
    problem = Problem(op, 16, 0.7, 3, steps=2, seed=1)
    names = [n for n, s in STORAGES.items() if s.unavailable() is None]
    times = measure_point(problem, names, TINY)
    assert set(times) == set(names) and all(t["median_s"] > 0 for t in times.values())


def test_a_registered_storage_is_measured_or_reported(monkeypatch):
    def unsupported(problem):
        raise Unsupported("no such kernel")

    monkeypatch.setitem(STORAGES, "dense_again", Storage("dense_again", "dense again", build_dense))
    monkeypatch.setitem(STORAGES, "nothing", Storage("nothing", "nothing", unsupported))
    times = measure_point(Problem("forward", 8, 0.5, 2, steps=1), ["dense", "dense_again", "nothing"], TINY)
    assert times["nothing"] == {"unsupported": "no such kernel"}
    assert times["dense_again"]["median_s"] > 0 and times["dense_again"]["stored"] == 4 * 8 * 8


def test_a_much_slower_storage_is_timed_once(monkeypatch):
    def sleepy(problem):
        w = problem.weights["weight_hh"]
        def run():
            time.sleep(0.02)  # thousands of times an 8x32 product
            return problem.x @ w.t()
        return Built({"x@W^T": Kernel(run)}, stored=w.numel())

    monkeypatch.setitem(STORAGES, "sleepy", Storage("sleepy", "sleepy", sleepy))
    config = StudyConfig(block_time=1e-3, point_time=1e-2, min_rounds=3, max_rounds=3, threads=1)
    times = measure_point(Problem("forward", 8, 0.5, 2, steps=1), ["dense", "sleepy"], config)
    assert times["sleepy"]["timed_once"] and times["sleepy"]["rounds"] == 1 and times["sleepy"]["number"] == 1
    assert not times["dense"]["timed_once"] and times["dense"]["rounds"] == 3


def test_a_storage_computing_something_else_stops_the_study(monkeypatch):
    def wrong(problem):
        w = problem.weights["weight_hh"] * 1.01
        return Built({"x@W^T": Kernel(lambda: problem.x @ w.t())}, stored=w.numel())

    monkeypatch.setitem(STORAGES, "wrong", Storage("wrong", "wrong", wrong))
    with pytest.raises(RuntimeError, match="'wrong'.*disagrees with dense torch at op=forward"):
        measure_point(Problem("forward", 8, 0.5, 2, steps=1, seed=3), ["dense", "wrong"], TINY)


def test_problem_has_the_exact_sparsity():
    matrices = Matrices(16, 0.9)
    p = Problem("cell", 16, 0.9, 2, steps=1, matrices=matrices)
    # Other ops and batches of the same (hidden, sparsity) share the matrices, not the activations.
    q = Problem("forward", 16, 0.9, 3, steps=1, matrices=matrices)
    assert q.weights["weight_hh"] is p.weights["weight_hh"] and q.x.shape == (3, 16)
    assert torch.equal(Problem("forward", 16, 0.9, 3, steps=1).weights["weight_hh"], q.weights["weight_hh"])
    with pytest.raises(ValueError, match="matrices are for"):
        Problem("forward", 16, 0.5, 3, steps=1, matrices=matrices)
    for name in ("weight_ih", "weight_hh"):
        assert int(p.masks[name].sum()) == round(0.1 * 64 * 16)
        assert torch.equal(p.weights[name] != 0, p.masks[name])  # stored values are nonzero (uniform draw)
    assert p.x.abs().sum() > 0 and p.grad_gates.abs().sum() > 0
    with pytest.raises(ValueError, match="op must be one of"):
        Problem("backward", 16, 0.9, 2, steps=1)
