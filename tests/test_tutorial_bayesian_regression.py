"""The Bayesian regression tutorial runs in fast mode: its asserts (the claims its text makes)
pass and it saves its figure."""

from tutorial_runner import run_tutorial


def test_bayesian_regression_tutorial_runs_in_fast_mode(tmp_path):
    result = run_tutorial("bayesian_regression.py", tmp_path)
    assert result.stdout.rstrip().endswith("done")
    assert (tmp_path / "bayesian_regression_bands.png").exists()
