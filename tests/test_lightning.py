"""The ELBO module under PyTorch Lightning's DDP on two CPU processes (tests/lightning_fit.py);
skipped when ``lightning`` is not installed."""

import os
import sys
from pathlib import Path

import distributed_workers as workers
import pytest
import torch

pytest.importorskip("lightning")

SCRIPT = Path(__file__).resolve().parent / "lightning_fit.py"
ROOT = SCRIPT.parent.parent


def test_lightning_ddp_fits_through_the_elbo_module(tmp_path):
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, str(SCRIPT), str(tmp_path)]
    result = workers.run_script(command, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert rank0.keys() == rank1.keys() == {"loc_map", "scale_map"}
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    # The MAP estimates of the data's mean 3.0 and scale 0.5 (256 points).
    assert abs(rank0["loc_map"].item() - 3.0) < 0.15
    assert abs(rank0["scale_map"].item() - 0.5) < 0.15
