"""The black-box gradients tutorial runs end to end in fast mode (its asserts pass)."""

from tutorial_runner import run_tutorial


def test_black_box_tutorial_runs_in_fast_mode(tmp_path):
    result = run_tutorial("black_box_gradients.py", tmp_path)
    assert result.stdout.rstrip().endswith("done")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "black_box_svi.png",
        "black_box_training.png",
    ]
