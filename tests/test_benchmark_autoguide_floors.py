"""The autoguide benchmark floors compute what Pyro's autoguides compute: started from the
guide's initial values, with the random state after its first-call prototype, a few
hand-written steps reach Pyro's parameters."""

import sys
from pathlib import Path

import pytest
import torch

import miniprob

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import autoguide_models  # noqa: E402
from test_benchmark_floors import STEPS, assert_floor_matches, svi_params  # noqa: E402

BENCHMARKS = autoguide_models.BENCHMARKS


def floor_params(name):
    build, kwargs, make_floor = BENCHMARKS[name]
    problem = build(miniprob, **kwargs)
    floor = make_floor(problem.args)
    torch.manual_seed(0)
    guide = problem.guide
    guide._setup_prototype(*problem.args)  # its draws, as at Pyro's first step
    start = {
        f"{guide._pyro_name}.{key.removesuffix('_unconstrained')}": leaf.detach()
        for key, leaf in guide.named_parameters()
    }
    with torch.no_grad():
        for key, leaf in floor.leaves.items():
            leaf.copy_(start[key])
    losses = [floor.step() for _ in range(STEPS)]
    return losses, floor.params()


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_floor_reaches_pyros_parameters(name, pyro_ref, monkeypatch):
    monkeypatch.setitem(sys.modules["models"].BENCHMARKS, name, BENCHMARKS[name])
    assert_floor_matches(svi_params(pyro_ref, name), floor_params(name))
