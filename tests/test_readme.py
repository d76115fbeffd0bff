"""The README's quickstart runs as written and does what its comments say."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_opens_with_the_two_setup_commands():
    first_block = README.read_text().split("```")[1]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()[1:]] == [
        "make demo",
        "make test",
    ]


def test_quickstart_runs_and_recovers_the_posterior():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(code, str(README), "exec"), namespace)
    pyro, data = namespace["pyro"], namespace["data"]
    # Exact posterior: N(sum(x) / (n + 1/100), 1 / (n + 1/100)).
    precision = len(data) + 1 / 100
    assert abs(pyro.param("m").item() - data.sum().item() / precision) < 0.05
    assert abs(pyro.param("s").item() - precision**-0.5) < 0.05
    assert namespace["losses"][-1] < namespace["losses"][0]
