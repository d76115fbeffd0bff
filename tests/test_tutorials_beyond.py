"""The deferred and flat-parameter tutorials run end to end in fast mode (their asserts pass)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


@pytest.mark.parametrize("name", ["transformed_parameters.py", "flat_parameters.py"])
def test_tutorial_runs_in_fast_mode(name, tmp_path):
    env = {**os.environ, "MINIPROB_FAST": "1", "MINIPROB_OUT": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(TUTORIALS / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.rstrip().endswith("done")
    assert list(tmp_path.glob("*.png"))
