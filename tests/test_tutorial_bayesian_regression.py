"""The Bayesian regression tutorial runs in fast mode: its asserts (the claims its text makes)
pass and it saves its figure."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "tutorials" / "bayesian_regression.py"


def test_bayesian_regression_tutorial_runs_in_fast_mode(tmp_path):
    # This checkout's miniprob first (the script's own folder is tutorials/).
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MINIPROB_FAST": "1", "MINIPROB_OUT": str(tmp_path), "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, str(TUTORIAL)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.rstrip().endswith("done")
    assert (tmp_path / "bayesian_regression_bands.png").exists()
