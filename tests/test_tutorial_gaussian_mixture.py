"""The Gaussian mixture tutorial runs end to end in fast mode: its asserts (the fit, the MAP
assignments, enumeration learning faster than the score function) pass, its figures are saved."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gaussian_mixture_tutorial_runs_in_fast_mode(tmp_path):
    env = {
        **os.environ,
        "MINIPROB_FAST": "1",
        "MINIPROB_OUT": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "tutorials" / "gaussian_mixture.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.rstrip().endswith("done")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "gaussian_mixture_fit.png",
        "gaussian_mixture_trace_elbo.png",
    ]
