"""Pyro's ``pyro.infer.util`` helpers that user code calls: ``torch_item``, ``zero_grads``, and
the validation switch under Pyro's names there.

Example::

    >>> import torch
    >>> torch_item(torch.tensor(2.5)), torch_item(3)
    (2.5, 3)
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import torch

from ..validation import enable_validation, is_validation_enabled


def torch_item(x: Any) -> Any:
    """``x.item()`` for a tensor; a number as it is."""
    return x if isinstance(x, numbers.Number) else x.item()


def zero_grads(tensors: Iterable[torch.Tensor]) -> None:
    """Replace each tensor's gradient, where it has one, by zeros (a new tensor, as in Pyro).

    Example::

        >>> w = torch.ones(2, requires_grad=True); w.sum().backward(); zero_grads([w])
        >>> w.grad.tolist()
        [0.0, 0.0]
    """
    for p in tensors:
        if p.grad is not None:
            p.grad = torch.zeros_like(p.grad)


__all__ = ["enable_validation", "is_validation_enabled", "torch_item", "zero_grads"]
