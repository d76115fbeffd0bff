"""Parameters as one flat vector, with the autograd graph kept.

``torch.nn.utils.parameters_to_vector`` copies the parameters into a new tensor that nothing
was computed from, so ``torch.autograd.grad(loss, vector)`` fails. Here the vector comes first:
it is a leaf, and the named tensors are views of it, so any loss computed from them is a
function of the one vector (for gradients, ``torch.func.hessian``, ``torch.vmap``,
``torch.optim.LBFGS`` or ``scipy.optimize.minimize``).

- :func:`ravel`: named tensors to ``(vector, unravel)``.
- :class:`FlatView`: an ``nn.Module`` run with its parameters read from a vector.
- :class:`ParamVector`: the param store's unconstrained parameters as a vector, and models,
  guides or losses run with their ``param`` statements reading from it.

Example::

    >>> import torch
    >>> vector, unravel = ravel({"w": torch.ones(2, 2), "b": torch.zeros(3)})
    >>> vector.shape, {name: tuple(t.shape) for name, t in unravel(vector).items()}
    (torch.Size([7]), {'w': (2, 2), 'b': (3,)})
    >>> loss = (unravel(vector)["w"] ** 2).sum()
    >>> torch.autograd.grad(loss, vector)[0].tolist()
    [2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.distributions.constraint_registry import transform_to

from .params import MODULE_SEPARATOR, ParamStore, get_param_store
from .poutine.handlers import substitute
from .validation import check_names

__all__ = ["FlatView", "ParamVector", "ravel"]

Unravel = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def ravel(
    named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
) -> tuple[torch.Tensor, Unravel]:
    """Concatenate named tensors into one fresh 1-D leaf; ``unravel`` splits a vector back.

    ``unravel(v)`` returns ``{name: view of v}`` with the original shapes (and dtypes), connected
    to ``v`` in the autograd graph. Leading batch dimensions pass through: ``v`` of shape
    ``(B, n)`` gives tensors of shape ``(B, *shape)``. Mixed dtypes share the promoted one.

    :param named_tensors: a dict ``name -> tensor``, or an iterable of ``(name, tensor)``.

    Example::

        >>> import torch
        >>> vector, unravel = ravel([("a", torch.tensor(1.0)), ("b", torch.tensor([2.0, 3.0]))])
        >>> vector.tolist(), vector.requires_grad
        ([1.0, 2.0, 3.0], True)
        >>> unravel(torch.zeros(4, 3))["b"].shape
        torch.Size([4, 2])
    """
    items = list(named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors)
    names: list[str] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"ravel: expected (name, tensor) pairs, got {item!r}")
        name, tensor = item
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            found = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise TypeError(f"ravel: '{name}' should be a floating-point tensor, got {found}")
        if names and tensor.device != items[0][1].device:
            raise ValueError(
                f"ravel: '{name}' is on {tensor.device}, '{names[0]}' on {items[0][1].device}; "
                "all tensors should be on one device"
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"ravel: duplicate names in {names}")
    tensors = [t for _, t in items]
    if tensors:
        dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
        vector = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])
    else:
        vector = torch.zeros(0)
    vector.requires_grad_(True)
    shapes = [t.shape for t in tensors]
    dtypes = [t.dtype for t in tensors]
    sizes = [t.numel() for t in tensors]
    size = sum(sizes)

    def unravel(v: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[-1] != size:
            found = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"unravel: expected a tensor of shape (..., {size}), got {found}")
        batch = v.shape[:-1]
        parts = v.split(sizes, dim=-1)
        return {
            name: part.reshape(batch + shape).to(dt)
            for name, part, shape, dt in zip(names, parts, shapes, dtypes, strict=True)
        }

    return vector, unravel


class FlatView:
    """An ``nn.Module``'s parameters as one flat leaf, and the module run with a vector.

    ``flat(*args, vector=None, **kwargs)`` (or ``flat.view(...)``) runs the module
    (``torch.func.functional_call``) with its parameters read from ``vector`` (default:
    ``self.vector``), as calling the module itself would; for a batch of vectors, use
    ``torch.vmap(lambda v: flat.view(x, vector=v))(vectors)``. ``write_back()`` copies
    ``self.vector`` into the module's parameters. Buffers are the module's own.

    :param module: the module; ``self.vector`` starts from its current parameters.

    Example::

        >>> import torch
        >>> net = torch.nn.Linear(3, 1)
        >>> flat = FlatView(net)
        >>> x = torch.randn(5, 3)
        >>> torch.allclose(flat(x), net(x)), flat.vector.shape
        (True, torch.Size([4]))
        >>> grad, = torch.autograd.grad(flat.view(x).sum(), flat.vector)
        >>> grad.shape
        torch.Size([4])
    """

    def __init__(self, module: torch.nn.Module) -> None:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(
                f"FlatView: 'module' should be an nn.Module, got {type(module).__name__}"
            )
        self.module = module
        self._parameters = dict(module.named_parameters())
        self.vector, self.unravel = ravel(self._parameters)

    def view(self, *args: Any, vector: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """The module's output with its parameters taken from ``vector``."""
        v = self.vector if vector is None else vector
        return torch.func.functional_call(self.module, self.unravel(v), args, kwargs)

    __call__ = view

    def write_back(self) -> None:
        """Copy ``self.vector`` into the module's parameters (in place, without grad)."""
        with torch.no_grad():
            for name, value in self.unravel(self.vector).items():
                self._parameters[name].copy_(value)


class ParamVector:
    """The param store's unconstrained parameters as one flat vector.

    :meth:`substitute` gives every ``param`` statement of a model, guide or loss the
    constrained value computed from its slice of a vector (each parameter's constraint
    transform applied), so :meth:`as_function` turns any of them into a function of one tensor.
    :meth:`write_back` copies a vector into the store's leaves. Run the model once first, so its
    parameters exist.

    :param names: the parameters to include, in order (default: all but those of
        ``pyro.module`` networks, in store order).
    :param store: the store (default: the current one).

    A network registered with ``pyro.module`` computes with its own ``nn.Parameter`` objects,
    not with what ``param`` returns, so a substituted value would not reach it: its parameters
    are left out by default and refused by name.

    Example::

        >>> import torch, miniprob as pyro
        >>> from miniprob.distributions import constraints
        >>> with pyro.get_param_store().scope():
        ...     _ = pyro.param("s", torch.tensor(1.0), constraint=constraints.positive)
        ...     params = ParamVector()
        ...     square = params.as_function(lambda: pyro.param("s") ** 2)
        ...     square(torch.tensor([0.0])).item(), square(torch.log(torch.tensor([3.0]))).item()
        (1.0, 9.0)
    """

    def __init__(self, names: Iterable[str] | None = None, store: ParamStore | None = None) -> None:
        self.store = get_param_store() if store is None else store
        if names is None:
            self.names = [n for n in self.store.keys() if MODULE_SEPARATOR not in n]
        else:
            check_names(names, "ParamVector: names")
            self.names = list(names)
            modules = [n for n in self.names if MODULE_SEPARATOR in n]
            if modules:
                raise ValueError(
                    f"ParamVector: {modules} belong to pyro.module networks, which compute with "
                    "their own nn.Parameters: a vector could not reach them"
                )
        if not self.names:
            raise ValueError(
                "ParamVector: no parameters to include (none given, or the param store holds "
                "none outside pyro.module networks: run the model once so its params exist)"
            )
        missing = [name for name in self.names if name not in self.store]
        if missing:
            raise KeyError(f"ParamVector: params {missing} are not in the param store")
        self._transforms = {n: transform_to(self.store.get_constraint(n)) for n in self.names}
        self.vector, self.unravel = ravel((n, self.store.unconstrained(n)) for n in self.names)

    def constrained(self, vector: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{name: constrained value}`` computed from ``vector`` (default ``self.vector``)."""
        unconstrained = self.unravel(self.vector if vector is None else vector)
        return {name: self._transforms[name](u) for name, u in unconstrained.items()}

    def substitute(self, vector: torch.Tensor | None = None) -> substitute:
        """A handler under which ``param`` statements read their values from ``vector``.

        Use it as ``with params.substitute(v): ...`` or ``params.substitute(v)(model)``.
        """
        return substitute(data=self.constrained(vector))

    def as_function(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn(*args, **kwargs)`` as ``g(vector, *args, **kwargs)``, its params read from
        ``vector``."""

        @functools.wraps(fn)
        def of_vector(vector: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            with self.substitute(vector):
                return fn(*args, **kwargs)

        return of_vector

    def write_back(self, vector: torch.Tensor | None = None) -> None:
        """Copy ``vector`` (default ``self.vector``) into the store's unconstrained leaves."""
        unconstrained = self.unravel(self.vector if vector is None else vector)
        # Every leaf checked first: a write that fails changes nothing.
        leaves = {}
        for name, u in unconstrained.items():
            if name not in self.store:
                raise KeyError(f"ParamVector.write_back: param '{name}' is no longer in the store")
            leaf = self.store.unconstrained(name)
            if leaf.shape != u.shape:
                raise ValueError(
                    f"ParamVector.write_back: param '{name}' now has shape {tuple(leaf.shape)}, "
                    f"the vector holds {tuple(u.shape)} for it"
                )
            leaves[name] = leaf
        with torch.no_grad():
            for name, u in unconstrained.items():
                leaves[name].copy_(u)
