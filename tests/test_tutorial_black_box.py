"""The black-box gradients tutorial runs end to end in fast mode (its asserts pass)."""

import os
import subprocess
import sys
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parent.parent / "tutorials" / "black_box_gradients.py"


def test_black_box_tutorial_runs_in_fast_mode(tmp_path):
    env = {**os.environ, "MINIPROB_FAST": "1", "MINIPROB_OUT": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(TUTORIAL)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.rstrip().endswith("done")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "black_box_svi.png",
        "black_box_training.png",
    ]
