"""Broadcasting advanced indexing (Pyro's ``pyro.ops.indexing``).

Plain ``tensor[i, j]`` with tensor indices puts the indices' broadcast shape
where the indexed dims were, which breaks when enumeration gives ``i`` extra
dims on the left.  ``vindex`` instead treats the index tensors as batched: the
result's shape is the broadcast of all index shapes (and the tensor's own batch
dims left of a leading ``...``), followed by one dim per full slice ``:``, in
order.
"""

from __future__ import annotations

import torch


def vindex(tensor: torch.Tensor, args) -> torch.Tensor:
    """Index ``tensor`` by ``args`` with batched, broadcasting semantics.

    ``args`` holds ints, tensors of integers and full slices ``:``, with at
    most one ``...``, which must come first; dims left of it are batch dims.

    >>> x = torch.arange(24.0).reshape(2, 3, 4)
    >>> i = torch.tensor([[0], [2]])  # shape (2, 1)
    >>> vindex(x, (..., i, torch.tensor([1, 3]))).shape
    torch.Size([2, 2])
    >>> vindex(x, (0, slice(None), torch.tensor([1, 3]))).shape
    torch.Size([2, 3])
    """
    if not isinstance(args, tuple):
        return tensor[args]
    if not args:
        return tensor
    if args[0] is Ellipsis:
        args = args[1:]
        if not args:
            return tensor
        event_dim = len(args)
        args = (slice(None),) * (tensor.dim() - event_dim) + args
    else:
        args = args + (slice(None),) * (tensor.dim() - len(args))
        event_dim = len(args)
    if len(args) != tensor.dim():
        raise IndexError(
            f"vindex: {len(args)} indices for a tensor of shape "
            f"{tuple(tensor.shape)} with {tensor.dim()} dims"
        )
    for arg in args:
        if arg is Ellipsis:
            raise NotImplementedError("vindex: only a leading ... is supported")
        if isinstance(arg, slice) and arg != slice(None):
            raise NotImplementedError(f"vindex: only full slices ':' are supported, found {arg}")
    slice_dims = sum(isinstance(a, slice) for a in args[len(args) - event_dim :])
    placed = 0
    indices = list(args)
    for pos in range(len(indices) - 1, -1, -1):
        arg = indices[pos]
        if isinstance(arg, slice):
            arange = torch.arange(tensor.size(pos), device=tensor.device)
            indices[pos] = arange.reshape((-1,) + (1,) * placed)
            placed += 1
        elif isinstance(arg, torch.Tensor):
            indices[pos] = arg.reshape(arg.shape + (1,) * slice_dims)
    return tensor[tuple(indices)]


class Vindex:
    """``Vindex(tensor)[args]`` is :func:`vindex` written as subscripting.

    >>> x = torch.arange(6.0).reshape(2, 3)
    >>> Vindex(x)[torch.tensor([1, 0]), torch.tensor([2, 2])]
    tensor([5., 2.])
    """

    def __init__(self, tensor: torch.Tensor):
        self._tensor = tensor

    def __getitem__(self, args) -> torch.Tensor:
        return vindex(self._tensor, args)


__all__ = ["Vindex", "vindex"]
