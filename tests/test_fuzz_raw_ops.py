"""The compiled ops called directly, bypassing every Python check
(tests/fuzz_raw_ops.py), in a subprocess: a segfault or a hang there fails
this test and names the call that was running, instead of killing pytest.
One malformed call per op must also raise a RuntimeError whose message names
the argument and the numbers at fault (fuzz_raw_ops.named_bad_calls)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from fuzz_helpers import CASES, EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_PER_FAMILY = 15
TIME_LIMIT_S = 300


def _run_fuzzer(tmp_path, *args) -> dict:
    """Run tests/fuzz_raw_ops.py in a fresh interpreter; fail naming the call
    that was running if it dies of a signal or hangs. Returns its summary."""
    log, summary = tmp_path / "calls.log", tmp_path / "summary.json"
    command = [sys.executable, str(ROOT / "tests" / "fuzz_raw_ops.py"), "--log", str(log), "--summary", str(summary),
               *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        last = log.read_text().splitlines()[-1:] if log.exists() else []
        raise AssertionError(f"the raw-op fuzzer hung (> {TIME_LIMIT_S} s); last call started: {last}") from None
    if done.returncode < 0:
        last = log.read_text().splitlines()[-1:] if log.exists() else []
        raise AssertionError(f"the raw-op fuzzer died of {signal.Signals(-done.returncode).name} during the call "
                             f"{last}\n{done.stderr[-3000:]}")
    assert summary.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert done.returncode == 0 and not result["failures"], "\n".join(result["failures"][:40])
    return result


# Issue 16's reproducers (fuzz_raw_ops.named_bad_calls), each alone in a fresh
# interpreter as reported: on a gcc 13.3 build both died of SIGSEGV while the
# check formatted the numbers of its message.
@pytest.mark.parametrize("case", ["gates (3, 5) for c_prev (3, 2)", "col_idx 2 with in_features 2"])
def test_issue16_reproducers_raise_in_a_fresh_interpreter(tmp_path, case):
    result = _run_fuzzer(tmp_path, "--only", case)
    assert result["calls"] == result["refused"] == 1, result


def test_raw_ops_never_crash_and_refuse_what_they_cannot_use(tmp_path):
    args = ["--examples", str(EXAMPLES_PER_FAMILY)]
    if settings().derandomize:  # the "ci" profile (tests/conftest.py): the same cases on every run
        args.append("--derandomize")
    result = _run_fuzzer(tmp_path, *args)
    EXAMPLES["torch.ops raw (subprocess)"] += EXAMPLES_PER_FAMILY * len(result["per_family"])
    CASES["torch.ops raw (subprocess)"] += result["calls"]
    # Every op of the library was called with a bad argument of its own (the named table).
    assert result["per_family"]["named"] >= 22, result
    # Most cases are malformed: they must have been refused, not computed.
    assert result["refused"] > result["computed"] > 0, result
