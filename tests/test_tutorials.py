"""The tutorials run, in their fast mode, and the claims their text makes hold.

Each tutorial is a script that asserts its own claims; here each runs in a subprocess with
``MINIPROB_FAST=1`` and its figures in a temporary folder, and must exit with status 0.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


@pytest.mark.parametrize("name", ["custom_objectives", "vae_digits"])
def test_tutorial_runs_in_fast_mode(name, tmp_path):
    env = dict(os.environ, MINIPROB_FAST="1", MINIPROB_OUT=str(tmp_path))
    result = subprocess.run(
        [sys.executable, str(TUTORIALS / f"{name}.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"tutorials/{name}.py exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
    )
    assert list(tmp_path.glob("*.png")), f"tutorials/{name}.py saved no figures to {tmp_path}"
