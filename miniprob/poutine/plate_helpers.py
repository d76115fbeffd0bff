"""Helpers around ``plate``: ``plate_stack`` (several plates at once), ``subsample`` (data cut
to the enclosing plates' subsamples) and ``block_plate`` (one enclosing plate switched off).

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> with pyro.plate_stack("grid", (2, 3)):
    ...     pyro.sample("x", dist.Normal(0.0, 1.0)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from ..runtime import _STACK, Messenger, apply_stack, new_message
from .plate import plate


@contextmanager
def plate_stack(prefix: str, sizes: Sequence[int], rightmost_dim: int = -1) -> Iterator[None]:
    """Enter one plate per size, named ``prefix_0, prefix_1, ...`` from the right, on the
    contiguous dims ``rightmost_dim - len(sizes) + 1, ..., rightmost_dim``.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> with pyro.plate_stack("p", (4, 5), rightmost_dim=-2):
        ...     pyro.sample("x", dist.Normal(0.0, 1.0)).shape
        torch.Size([4, 5, 1])
    """
    if not (isinstance(rightmost_dim, int) and rightmost_dim < 0):
        raise ValueError(
            f"plate_stack '{prefix}': rightmost_dim should be a negative int, got {rightmost_dim!r}"
        )
    with ExitStack() as stack:
        for i, size in enumerate(reversed(sizes)):
            stack.enter_context(plate(f"{prefix}_{i}", size, dim=rightmost_dim - i))
        yield


def _subsample(data: torch.Tensor, event_dim: int) -> torch.Tensor:
    return data  # the enclosing plates index it (see ``plate.postprocess_message``)


def subsample(data: torch.Tensor, event_dim: int) -> torch.Tensor:
    """``data`` cut to the subsamples of the enclosing plates: a plate of ``size`` rows at
    ``dim`` indexes ``data`` at ``dim - event_dim`` (sizes of 1 broadcast and stay).

    Example::

        >>> import torch, miniprob as pyro
        >>> data = torch.arange(10.0)
        >>> with pyro.plate("data", 10, subsample=torch.tensor([1, 3])):
        ...     pyro.subsample(data, event_dim=0)
        tensor([1., 3.])
    """
    if not (isinstance(event_dim, int) and event_dim >= 0):
        raise ValueError(f"subsample: event_dim should be an int >= 0, got {event_dim!r}")
    if not _STACK.get():
        return data
    msg = new_message("subsample", None, _subsample, (data,), {"event_dim": event_dim})
    apply_stack(msg)
    return msg["value"]


class block_plate:
    """Switch off one enclosing plate (by ``name`` or by ``dim``) for the sites inside: they
    are drawn once, not once per element. With ``strict`` (default) exactly one active plate
    must match.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> with pyro.plate("data", 3):
        ...     with pyro.poutine.block_plate("data"):
        ...         pyro.sample("scale", dist.LogNormal(0.0, 1.0)).shape
        torch.Size([])
    """

    def __init__(self, name: str | None = None, dim: int | None = None, *, strict: bool = True):
        if (name is not None) == (dim is not None):
            raise ValueError("Exactly one of name,dim must be specified")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"block_plate: 'name' should be a str, got {type(name).__name__}")
        if dim is not None and not (isinstance(dim, int) and dim < 0):
            raise ValueError(f"block_plate: 'dim' should be a negative int, got {dim!r}")
        self.name = name
        self.dim = dim
        self.strict = strict
        self._blocked: list[list[tuple[plate, Messenger]]] = []  # per active entry

    def _matches(self, handler: Any) -> bool:
        if not isinstance(handler, plate):
            return False
        return handler.name == self.name if self.name is not None else handler.dim == self.dim

    def __enter__(self) -> list[plate]:
        stack = list(_STACK.get())
        blocked = []
        for i, handler in enumerate(stack):
            if self._matches(handler):
                stack[i] = Messenger()  # a handler that does nothing holds the place
                blocked.append((handler, stack[i]))
        if self.strict and len(blocked) != 1:
            raise ValueError(
                f"block_plate matched {len(blocked)} messengers. "
                "Try either removing the block_plate or "
                "setting strict=False."
            )
        _STACK.set(tuple(stack))
        self._blocked.append(blocked)
        return [handler for handler, _ in blocked]

    def __exit__(self, *exc: Any) -> None:
        restore = {id(stand_in): handler for handler, stand_in in self._blocked.pop()}
        _STACK.set(tuple(restore.get(id(h), h) for h in _STACK.get()))
