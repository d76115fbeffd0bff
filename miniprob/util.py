"""Small utilities: seeding, saving and restoring every random number generator miniprob uses.

Example::

    >>> import torch, miniprob as pyro
    >>> pyro.set_rng_seed(0); a = torch.randn(1)
    >>> pyro.set_rng_seed(0); bool((a == torch.randn(1)).all())
    True
"""

from __future__ import annotations

import random
from typing import Any

import torch


def set_rng_seed(rng_seed: int) -> None:
    """Seed torch, Python's ``random`` and NumPy (when installed), as Pyro does."""
    torch.manual_seed(rng_seed)
    random.seed(rng_seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(rng_seed)


def get_rng_state() -> dict[str, Any]:
    """The states of torch's (CPU and, once used, CUDA), Python's and NumPy's generators."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:
        return state
    state["numpy"] = np.random.get_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
