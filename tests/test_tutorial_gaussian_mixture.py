"""The Gaussian mixture tutorial runs end to end in fast mode: its asserts (the fit, the MAP
assignments, enumeration learning faster than the score function) pass, its figures are saved."""

from tutorial_runner import run_tutorial


def test_gaussian_mixture_tutorial_runs_in_fast_mode(tmp_path):
    result = run_tutorial("gaussian_mixture.py", tmp_path)
    assert result.stdout.rstrip().endswith("done")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "gaussian_mixture_fit.png",
        "gaussian_mixture_trace_elbo.png",
    ]
