"""Small utilities: seeding, saving and restoring every random number generator miniprob uses,
and the helpers Pyro's users import from ``pyro.util`` (warning filters, NaN/inf warnings).

Example::

    >>> import torch, miniprob as pyro
    >>> pyro.set_rng_seed(0); a = torch.randn(1)
    >>> pyro.set_rng_seed(0); bool((a == torch.randn(1)).all())
    True
"""

from __future__ import annotations

import math
import numbers
import random
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# NumPy's legacy seeding takes 0 <= seed < 2**32; torch and Python take more, but a seed is
# checked against the narrowest range so that no generator is seeded when another would refuse.
_MAX_SEED = 2**32 - 1


def check_rng_seed(rng_seed: Any, where: str = "set_rng_seed") -> int:
    """``rng_seed`` if it is an int in ``[0, 2**32 - 1]`` (what torch, Python's ``random`` and
    NumPy all accept), else ``ValueError`` naming the argument.

    Example::

        >>> check_rng_seed(7)
        7
    """
    if isinstance(rng_seed, bool) or not isinstance(rng_seed, numbers.Integral):
        raise ValueError(f"{where}: 'rng_seed' argument should be an int, got {rng_seed!r}")
    if not 0 <= rng_seed <= _MAX_SEED:
        raise ValueError(
            f"{where}: 'rng_seed' argument should be in [0, 2**32 - 1] (the seeds torch, "
            f"Python's random and NumPy all accept), got {rng_seed}"
        )
    return int(rng_seed)


def set_rng_seed(rng_seed: int) -> None:
    """Seed torch, Python's ``random`` and NumPy (when installed), as Pyro does.

    The seed is checked first (an int in ``[0, 2**32 - 1]``): a bad one raises ``ValueError``
    and reseeds nothing.
    """
    rng_seed = check_rng_seed(rng_seed)
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


def check_rng_state(state: Any) -> None:
    """Raise ``ValueError`` naming the part of ``state`` (from :func:`get_rng_state`) that no
    generator would accept; tried on scratch generators, so nothing changes.

    Example::

        >>> try:
        ...     check_rng_state({"torch": torch.zeros(3), "random": None})
        ... except ValueError as e:
        ...     print(str(e)[:45])
        RNG state 'torch': expected a uint8 tensor of
    """
    if not isinstance(state, dict) or "torch" not in state or "random" not in state:
        found = f"the keys {sorted(map(str, state))}" if isinstance(state, dict) else repr(state)
        raise ValueError(f"RNG state: expected a dict with 'torch' and 'random', got {found}")
    expected = torch.get_rng_state()
    value = state["torch"]
    if not (
        isinstance(value, torch.Tensor)
        and value.dtype == expected.dtype
        and value.shape == expected.shape
    ):
        found = (
            f"a tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
            if isinstance(value, torch.Tensor)
            else type(value).__name__
        )
        raise ValueError(
            f"RNG state 'torch': expected a uint8 tensor of {expected.numel()} bytes, got {found}"
        )
    try:
        random.Random().setstate(state["random"])
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"RNG state 'random': Python's random refuses it: {e}") from None
    if "cuda" in state:
        cuda = state["cuda"]
        if not isinstance(cuda, list | tuple) or not all(
            isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda
        ):
            raise ValueError("RNG state 'cuda': expected a list of uint8 tensors")
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            return
        try:
            np.random.RandomState().set_state(state["numpy"])
        except (TypeError, ValueError, IndexError) as e:
            raise ValueError(f"RNG state 'numpy': NumPy refuses it: {e}") from None


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`get_rng_state`; every part is checked first
    (:func:`check_rng_state`), so a bad one raises ``ValueError`` and changes nothing."""
    check_rng_state(state)
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


class ExperimentalWarning(UserWarning):
    """Warns that a feature's interface may change (Pyro's category)."""


@contextmanager
def ignore_experimental_warning() -> Iterator[None]:
    """Silence :class:`ExperimentalWarning` inside the block.

    Example::

        >>> with ignore_experimental_warning():
        ...     warnings.warn("new", ExperimentalWarning)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        yield


@contextmanager
def ignore_jit_warnings(filter: list | None = None) -> Iterator[None]:
    """Silence ``torch.jit.TracerWarning`` inside the block while a jit trace is being
    recorded (outside one it changes nothing, as in Pyro). ``filter``: the messages to silence,
    each a string or a ``(message, category)`` pair; None silences every tracer warning.

    Example::

        >>> with ignore_jit_warnings():
        ...     x = torch.ones(2).tolist()
    """
    if not torch._C._get_tracing_state():
        yield
        return
    with warnings.catch_warnings():
        if filter is None:
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        else:
            for message in filter:
                category = torch.jit.TracerWarning
                if isinstance(message, tuple):
                    message, category = message
                warnings.filterwarnings("ignore", category=category, message=message)
        yield


def torch_isnan(x: Any) -> Any:
    """Whether a number is NaN, or a tensor holds any NaN (a bool tensor).

    Example::

        >>> torch_isnan(float("nan")), bool(torch_isnan(torch.ones(2)))
        (True, False)
    """
    if isinstance(x, numbers.Number):
        return x != x
    return torch.isnan(x).any()


def torch_isinf(x: Any) -> Any:
    """Whether a number is infinite, or a tensor holds any infinity (a bool tensor)."""
    if isinstance(x, numbers.Number):
        return x in (math.inf, -math.inf)
    return torch.isinf(x).any()


def _caller(filename: str | None, lineno: int | None) -> tuple[str, int]:
    if filename is not None:
        return filename, lineno if isinstance(lineno, int) else 1
    frame = sys._getframe(2)
    return frame.f_code.co_filename, frame.f_lineno


def warn_if_nan(
    value: Any, msg: str = "", *, filename: str | None = None, lineno: int | None = None
) -> Any:
    """Warn (a ``UserWarning`` at the caller's line) if ``value`` holds a NaN, and, for a tensor
    that requires grad, if its gradient does; ``value`` is returned as it is.

    Example::

        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = warn_if_nan(torch.tensor(float("nan")), "loss")
        >>> str(caught[0].message)
        'Encountered NaN: loss'
    """
    filename, lineno = _caller(filename, lineno)
    if isinstance(value, torch.Tensor) and value.requires_grad:
        value.register_hook(
            lambda g: warn_if_nan(g, "backward " + msg, filename=filename, lineno=lineno)
        )
    if torch_isnan(value):
        warnings.warn_explicit(
            "Encountered NaN" + (": " + msg if msg else "."), UserWarning, filename, lineno
        )
    return value


def warn_if_inf(
    value: Any,
    msg: str = "",
    allow_posinf: bool = False,
    allow_neginf: bool = False,
    *,
    filename: str | None = None,
    lineno: int | None = None,
) -> Any:
    """Warn if ``value`` (or, for a tensor that requires grad, its gradient) holds +inf or
    -inf, unless allowed; ``value`` is returned as it is."""
    filename, lineno = _caller(filename, lineno)
    if isinstance(value, torch.Tensor) and value.requires_grad:
        value.register_hook(
            lambda g: warn_if_inf(
                g, "backward " + msg, allow_posinf, allow_neginf, filename=filename, lineno=lineno
            )
        )
    for sign, allowed in (("+", allow_posinf), ("-", allow_neginf)):
        inf = math.inf if sign == "+" else -math.inf
        found = value == inf if isinstance(value, numbers.Number) else (value == inf).any()
        if not allowed and found:
            warnings.warn_explicit(
                f"Encountered {sign}inf" + (": " + msg if msg else "."),
                UserWarning,
                filename,
                lineno,
            )
    return value
