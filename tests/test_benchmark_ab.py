"""benchmarks/ab.py: a git revision's miniprob runs beside the working tree's, on its own."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import miniprob

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import ab  # noqa: E402


def _in_git_checkout() -> bool:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True)
    return done.returncode == 0


@pytest.mark.skipif(not _in_git_checkout(), reason="needs the git history")
def test_the_base_revision_is_a_separate_library_with_its_own_store(tmp_path, monkeypatch):
    ab.export_base("HEAD", tmp_path)
    assert (tmp_path / "miniprob_base" / "runtime.py").exists()
    monkeypatch.syspath_prepend(str(tmp_path))
    step_new, step_base = ab.svi_step("miniprob", "tiny"), ab.svi_step("miniprob_base", "tiny")
    torch.manual_seed(0)
    loss_new = step_new()
    torch.manual_seed(0)
    loss_base = step_base()
    assert loss_new == pytest.approx(loss_base, rel=1e-3)  # the same model, the same draws
    import miniprob_base

    assert miniprob_base.get_param_store() is not miniprob.get_param_store()
    assert set(miniprob_base.get_param_store().keys()) == {"m", "s"}
    median, q1, q3 = ab.compare("tiny", rounds=2, steps=2)
    assert 0 < q1 <= median <= q3
    miniprob_base.clear_param_store()
    for name in [m for m in sys.modules if m.split(".")[0] == "miniprob_base"]:
        del sys.modules[name]
