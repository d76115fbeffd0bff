"""The deferred and flat-parameter tutorials run end to end in fast mode (their asserts pass)."""

import pytest
from tutorial_runner import run_tutorial


@pytest.mark.parametrize("name", ["transformed_parameters.py", "flat_parameters.py"])
def test_tutorial_runs_in_fast_mode(name, tmp_path):
    result = run_tutorial(name, tmp_path)
    assert result.stdout.rstrip().endswith("done")
    assert list(tmp_path.glob("*.png"))
