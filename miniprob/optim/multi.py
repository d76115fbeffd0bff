"""Optimizers over named parameter values: ``step(loss, {name: pyro.param(name)})``.

Unlike Pyro's, these work for constrained parameters: gradients are taken with respect to each
value's unconstrained leaf (``value.unconstrained()``), which is what gets updated.

Example::

    >>> import torch, miniprob as pyro
    >>> from miniprob.optim import Adam, SGD
    >>> from miniprob.optim.multi import MixedMultiOptimizer
    >>> pyro.clear_param_store()
    >>> a, b = pyro.param("a", torch.tensor(1.0)), pyro.param("b", torch.tensor(1.0))
    >>> opt = MixedMultiOptimizer([(["a"], Adam({"lr": 0.1})), (["b"], SGD({"lr": 0.1}))])
    >>> opt.step(a ** 2 + b ** 2, {"a": a, "b": b})
    >>> round(pyro.param("a").item(), 3), round(pyro.param("b").item(), 3)
    (0.9, 0.8)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from .optim import PyroOptim


def _leaf(name: str, value: torch.Tensor) -> torch.Tensor:
    handle = getattr(value, "unconstrained", None)
    leaf = handle() if handle is not None else value
    if leaf is None or not leaf.is_leaf or not leaf.requires_grad:
        raise ValueError(f"parameter '{name}' is not a trainable leaf nor a value of pyro.param")
    return leaf


class MultiOptimizer:
    """Base class: ``step(loss, params)`` updates the named parameters to reduce ``loss``."""

    def step(self, loss: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def _step_with_grads(self, grads: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        raise NotImplementedError


class PyroMultiOptimizer(MultiOptimizer):
    """A :class:`PyroOptim` driven by ``step(loss, params)``."""

    def __init__(self, optim: PyroOptim) -> None:
        if not isinstance(optim, PyroOptim):
            raise TypeError(f"expected a miniprob.optim optimizer, got {type(optim).__name__}")
        self.optim = optim

    def step(self, loss: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
        leaves = [_leaf(name, v) for name, v in params.items()]
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        self._step_with_grads(dict(zip(params, zip(leaves, grads, strict=True), strict=True)))

    def _step_with_grads(self, grads: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        leaves = []
        for leaf, grad in grads.values():
            leaf.grad = grad
            leaves.append(leaf)
        self.optim(leaves)
        for leaf in leaves:
            leaf.grad = None


class TorchMultiOptimizer(PyroMultiOptimizer):
    """A torch optimizer class and its arguments, driven by ``step(loss, params)``."""

    def __init__(
        self, optim_constructor: Callable[..., torch.optim.Optimizer], optim_args: dict
    ) -> None:
        super().__init__(PyroOptim(optim_constructor, optim_args))


class MixedMultiOptimizer(MultiOptimizer):
    """Different optimizers for different parameters: ``[(names, optimizer), ...]``.

    Gradients are computed once, for all parameters, then each part updates its own.
    """

    def __init__(self, parts: Sequence[tuple[Iterable[str], Any]]) -> None:
        self.parts: list[tuple[list[str], MultiOptimizer]] = []
        owner: dict[str, int] = {}
        for i, (names, optim) in enumerate(parts):
            names = [names] if isinstance(names, str) else list(names)
            if isinstance(optim, PyroOptim):
                optim = PyroMultiOptimizer(optim)
            elif not isinstance(optim, MultiOptimizer):
                raise TypeError(
                    f"part {i}: expected a miniprob optimizer, got {type(optim).__name__}"
                )
            for name in names:
                if name in owner:
                    raise ValueError(
                        f"parameter '{name}' is claimed by two optimizers "
                        f"(parts {owner[name]} and {i})"
                    )
                owner[name] = i
            self.parts.append((names, optim))
        self._names = set(owner)

    def step(self, loss: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
        unknown = sorted(set(params) - self._names)
        missing = sorted(self._names - set(params))
        if unknown or missing:
            raise ValueError(
                "MixedMultiOptimizer: "
                + (f"no optimizer was given for {unknown}" if unknown else "")
                + ("; " if unknown and missing else "")
                + (f"params {missing} were named but not passed to step" if missing else "")
            )
        leaves = [_leaf(name, v) for name, v in params.items()]
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        grads = dict(zip(params, zip(leaves, grads, strict=True), strict=True))
        for names, optim in self.parts:
            optim._step_with_grads({name: grads[name] for name in names})
