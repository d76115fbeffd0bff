"""Run a tutorial script as CI does: in its fast mode, in a subprocess, with figures in a
folder of the test's own. Each tutorial asserts the claims its text makes, so exiting with
status 0 is the check; the tests then look at what it printed and saved."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_tutorial(name: str, out: Path) -> subprocess.CompletedProcess:
    """Run ``tutorials/<name>`` with ``MINIPROB_FAST=1`` and ``MINIPROB_OUT=out``, this
    checkout's miniprob first on the path (the script's own folder is tutorials/); fails the
    test, with the tail of both streams, unless it exits with status 0."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MINIPROB_FAST": "1", "MINIPROB_OUT": str(out), "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tutorials" / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"tutorials/{name} exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
    )
    return result
