"""The compiled ops called directly, bypassing every Python check
(tests/fuzz_raw_ops.py), in a subprocess: a segfault or a hang there fails
this test and names the call that was running, instead of killing pytest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from hypothesis import settings

from fuzz_helpers import CASES, EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_PER_FAMILY = 15
TIME_LIMIT_S = 300


def test_raw_ops_never_crash_and_refuse_what_they_cannot_use(tmp_path):
    log, summary = tmp_path / "calls.log", tmp_path / "summary.json"
    command = [sys.executable, str(ROOT / "tests" / "fuzz_raw_ops.py"), "--examples", str(EXAMPLES_PER_FAMILY),
               "--log", str(log), "--summary", str(summary)]
    if settings().derandomize:  # the "ci" profile (tests/conftest.py): the same cases on every run
        command.append("--derandomize")
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
    EXAMPLES["torch.ops raw (subprocess)"] += EXAMPLES_PER_FAMILY * len(result["per_family"])
    CASES["torch.ops raw (subprocess)"] += result["calls"]
    assert done.returncode == 0 and not result["failures"], "\n".join(result["failures"][:40])
    # Most cases are malformed: they must have been refused, not computed.
    assert result["refused"] > result["computed"] > 0, result
