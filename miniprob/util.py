"""Small utilities: seeding every random number generator miniprob draws from.

Example::

    >>> import torch, miniprob as pyro
    >>> pyro.set_rng_seed(0); a = torch.randn(1)
    >>> pyro.set_rng_seed(0); bool((a == torch.randn(1)).all())
    True
"""

from __future__ import annotations

import random


def set_rng_seed(rng_seed: int) -> None:
    """Seed torch, Python's ``random`` and NumPy (when installed), as Pyro does."""
    import torch

    torch.manual_seed(rng_seed)
    random.seed(rng_seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(rng_seed)
