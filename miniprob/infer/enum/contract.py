"""Tensor variable elimination over a plated factor graph (Obermeyer et al., ICML 2019).

A :class:`Factor` is a tensor of log values whose dims have names: an enumerated variable (its
site name) or a plate (the plate's name). A factor graph is a dict from *ordinals* (the
frozenset of plates a factor lies in) to factors. :func:`contract_tree` sums the named
variables out of it, plate-aware:

1. split the factors into connected components (factors sharing a variable to sum out);
2. in each component, take the deepest ordinal (the *leaf*), and there
   a. sum out the variables local to it (those no factor of a shallower ordinal uses), one
      at a time, the one whose factors make the smallest table first: add the factors that
      mention it (a product in log space) and log-sum-exp over it (so a chain costs time
      linear in its length);
   b. take the product over the leaf's plates that the result's remaining variables do not
      lie in (a sum over those plate dims in log space), which moves the result to the
      *parent* ordinal, the union of the ordinals of the variables it still mentions;
3. repeat until one factor is left at the component's shallowest ordinal.

A variable outside a plate that factors inside the plate depend on is thus summed only after
the product over the plate, which keeps the cost linear in the plate's size. Plates must nest
as a tree along each dependency (a variable may not tie two independent plates), otherwise
:class:`NotImplementedError` says which plates.

With ``ring="max"`` step 2a takes a max instead of a log-sum-exp (Viterbi). A :class:`Tape`
records each elimination (the factor before summing and the variables summed) so that
:func:`sample_tape` can walk it backwards: forward filtering, backward sampling (or
maximizing), as :func:`~miniprob.infer.infer_discrete` needs.

Example::

    >>> import torch
    >>> x = Factor(torch.tensor([0.2, 0.8]).log(), ("x",))
    >>> y_given_x = Factor(torch.tensor([[0.5, 0.5], [0.1, 0.9]]).log(), ("x", "y"))
    >>> tree = contract_tree({frozenset(): [x, y_given_x]}, {"x", "y"})
    >>> round(tree[frozenset()][0].tensor.exp().item(), 6)
    1.0
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable
from typing import NamedTuple

import torch

Ordinal = frozenset


class Factor(NamedTuple):
    """A tensor of log values with one name per dim (``len(dims) == tensor.dim()``)."""

    tensor: torch.Tensor
    dims: tuple[Hashable, ...]


def align(factors: Iterable[Factor]) -> tuple[list[torch.Tensor], tuple[Hashable, ...]]:
    """The tensors of ``factors`` viewed over the union of their dims (size 1 where absent),
    so that they broadcast, and that union in order of first appearance.

    Example::

        >>> a = Factor(torch.zeros(2), ("x",))
        >>> b = Factor(torch.zeros(3, 2), ("y", "x"))
        >>> [t.shape for t in align([a, b])[0]], align([a, b])[1]
        ([torch.Size([2, 1]), torch.Size([2, 3])], ('x', 'y'))
    """
    factors = list(factors)
    dims: dict[Hashable, None] = {}
    for f in factors:
        dims.update(dict.fromkeys(f.dims))
    order = tuple(dims)
    tensors = []
    for f in factors:
        if f.dims == order:
            tensors.append(f.tensor)
            continue
        present = [d for d in order if d in f.dims]
        t = f.tensor.permute([f.dims.index(d) for d in present])
        shape = [t.shape[present.index(d)] if d in f.dims else 1 for d in order]
        tensors.append(t.reshape(shape))
    return tensors, order


class Tape:
    """The eliminations of a forward pass, in order: ``(factor, summed dims)``."""

    def __init__(self) -> None:
        self.steps: list[tuple[Factor, frozenset]] = []


def _combine(factors: list[Factor], sum_dims: set, ring: str) -> Factor:
    """Add ``factors`` and sum ``sum_dims`` out at once (over their joint table)."""
    tensors, order = align(factors)
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    axes = [i for i, d in enumerate(order) if d in sum_dims]
    if axes:
        total = total.logsumexp(axes) if ring == "log" else total.amax(axes)
    return Factor(total, tuple(d for d in order if d not in sum_dims))


def sumproduct(
    factors: list[Factor], sum_dims: set, ring: str = "log", tape: Tape | None = None
) -> Factor:
    """Add ``factors`` (a product in log space) and sum ``sum_dims`` out of the result
    (log-sum-exp, or max with ``ring="max"``), one variable at a time: each time the one
    whose factors make the smallest table (greedy variable elimination, so that a chain costs
    linear, not exponential, time). ``tape`` records each elimination.

    Example::

        >>> a = Factor(torch.zeros(2, 3), ("x", "y"))
        >>> sumproduct([a], {"y"}).tensor.exp().tolist()
        [3.0, 3.0]
    """
    live = dict(enumerate(factors))  # factor id -> factor, for factors not yet combined
    holders: dict[Hashable, set[int]] = {}  # dim -> ids of the live factors that have it
    sizes: dict[Hashable, int] = {}
    for i, f in live.items():
        for d, size in zip(f.dims, f.tensor.shape, strict=True):
            holders.setdefault(d, set()).add(i)
            sizes[d] = size
    rank = {d: r for r, d in enumerate(sorted((d for d in sum_dims if d in holders), key=str))}

    def table_size(var: Hashable) -> int:
        n = 1
        for d in {d for i in holders[var] for d in live[i].dims}:
            n *= sizes[d]
        return n

    cost = {d: table_size(d) for d in rank}
    # A heap of (cost, rank, variable); an entry whose cost has changed since is skipped.
    heap = [(c, rank[d], d) for d, c in cost.items()]
    heapq.heapify(heap)
    next_id = len(live)
    while heap:
        c, _, var = heapq.heappop(heap)
        if cost.get(var) != c:
            continue
        del cost[var]
        ids = sorted(holders.pop(var))
        involved = [live.pop(i) for i in ids]
        for d in {d for f in involved for d in f.dims if d != var}:
            holders[d].difference_update(ids)
        if tape is not None:
            whole = _combine(involved, set(), ring)
            tape.steps.append((whole, frozenset([var])))
            involved = [whole]
        result = _combine(involved, {var}, ring)
        live[next_id] = result
        for d in result.dims:
            holders[d].add(next_id)
        next_id += 1
        for d in result.dims:
            if d in cost:
                cost[d] = table_size(d)
                heapq.heappush(heap, (cost[d], rank[d], d))
    return _combine(list(live.values()), set(), ring)


def product(factor: Factor, plates: Iterable[Hashable]) -> Factor:
    """The product over the named plates (a sum of the log values along their dims)."""
    axes = [i for i, d in enumerate(factor.dims) if d in plates]
    if not axes:
        return factor
    kept = tuple(d for d in factor.dims if d not in plates)
    return Factor(factor.tensor.sum(axes), kept)


def _components(factors: list[Factor], sum_dims: set) -> list[tuple[list[Factor], set]]:
    """Split ``factors`` into groups connected through shared ``sum_dims``; each group with
    the sum dims it uses, in order of its first factor (union-find over the factors)."""
    parent = list(range(len(factors)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_holder: dict[Hashable, int] = {}
    for i, f in enumerate(factors):
        for d in f.dims:
            if d in sum_dims:
                j = first_holder.setdefault(d, i)
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)
    groups: dict[int, tuple[list[Factor], set]] = {}
    for i, f in enumerate(factors):
        group = groups.setdefault(root(i), ([], set()))
        group[0].append(f)
        group[1].update(d for d in f.dims if d in sum_dims)
    return list(groups.values())


def _contract_component(
    tree: dict[Ordinal, list[Factor]], sum_dims: set, ring: str, tape: Tape | None
) -> tuple[Ordinal, Factor]:
    """Sum ``sum_dims`` out of one connected component, leaf ordinals first."""
    # Each variable belongs at the shallowest ordinal of the factors that mention it.
    var_ordinal: dict[Hashable, Ordinal] = {}
    for ordinal, factors in tree.items():
        for f in factors:
            for d in sum_dims.intersection(f.dims):
                var_ordinal[d] = var_ordinal.get(d, ordinal) & ordinal
    vars_at: dict[Ordinal, set] = {}
    for d, ordinal in var_ordinal.items():
        vars_at.setdefault(ordinal, set()).add(d)
    root = frozenset.intersection(*tree)
    while any(vars_at.values()):
        leaf = max(tree, key=len)
        leaf_factors = tree.pop(leaf)
        leaf_vars = vars_at.pop(leaf, set())
        for factors, local in _components(leaf_factors, leaf_vars):
            result = sumproduct(factors, local, ring, tape)
            if leaf == root:
                parent = leaf
            else:
                pending = sum_dims.intersection(result.dims)
                parents = [o for o, vs in vars_at.items() if vs & pending]
                parent = frozenset().union(*parents)
                if parent == leaf:
                    raise NotImplementedError(
                        "enumeration needs plates that nest as a tree, but a variable ties "
                        f"the independent plates {sorted(map(str, leaf))}; make one of them "
                        "a sequential plate (at a cost exponential in its size)"
                    )
                result = product(result, leaf - parent)
            tree.setdefault(parent, []).append(result)
    (ordinal, (factor,)) = tree.popitem()
    return ordinal, factor


def contract_tree(
    tree: dict[Ordinal, list[Factor]], sum_dims: set, ring: str = "log", tape: Tape | None = None
) -> dict[Ordinal, list[Factor]]:
    """Sum the variables ``sum_dims`` out of a plated factor graph (see the module docstring).

    Returns one factor per connected component, at the component's shallowest ordinal, with
    that ordinal's plate dims (and any dims not summed) left; ``tree`` is not changed.

    Example::

        >>> z = Factor(torch.tensor([0.5, 0.5]).log(), ("z",))   # a global variable
        >>> obs = Factor(torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]).log(), ("z", "data"))
        >>> out = contract_tree({frozenset(): [z], frozenset({"data"}): [obs]}, {"z"})
        >>> round(out[frozenset()][0].tensor.exp().item(), 4)   # 0.5*0.006 + 0.5*0.12
        0.063
    """
    ordinal_of = {id(f): o for o, fs in tree.items() for f in fs}
    factors = [f for fs in tree.values() for f in fs]
    result: dict[Ordinal, list[Factor]] = {}
    for group, dims in _components(factors, sum_dims):
        component: dict[Ordinal, list[Factor]] = {}
        for f in group:
            component.setdefault(ordinal_of[id(f)], []).append(f)
        ordinal, factor = _contract_component(component, dims, ring, tape)
        result.setdefault(ordinal, []).append(factor)
    return result


def _gather(factor: Factor, dim: Hashable, index: Factor) -> Factor:
    """``factor`` at the values ``index`` (integer, dims a subset of plates) of ``dim``."""
    (t, idx), order = align([factor, index])
    axis = order.index(dim)
    shape = list(torch.broadcast_shapes(t.shape, idx.shape))
    t = t.expand(shape)
    shape[axis] = 1
    picked = t.gather(axis, idx.expand(shape)).squeeze(axis)
    return Factor(picked, order[:axis] + order[axis + 1 :])


def sample_tape(tape: Tape, ring: str, values: dict | None = None) -> dict[Hashable, Factor]:
    """Walk ``tape`` backwards: each eliminated variable drawn from (``ring="log"``) or set to
    the argmax of (``ring="max"``) its factor given the variables eliminated after it.

    Returns integer :class:`Factor` s of indices, one per variable, with plate dims only.

    Example::

        >>> tape = Tape()
        >>> x = Factor(torch.tensor([0.2, 0.8]).log(), ("x",))
        >>> _ = contract_tree({frozenset(): [x]}, {"x"}, "max", tape)
        >>> sample_tape(tape, "max")["x"].tensor.item()
        1
    """
    values = {} if values is None else dict(values)
    for factor, summed in reversed(tape.steps):
        for d in factor.dims:
            if d in values and d not in summed:
                factor = _gather(factor, d, values[d])
        axes = [i for i, d in enumerate(factor.dims) if d in summed]
        rest = [i for i, d in enumerate(factor.dims) if d not in summed]
        t = factor.tensor.permute(rest + axes)
        sizes = t.shape[len(rest) :]
        flat = t.reshape(t.shape[: len(rest)] + (-1,))
        if ring == "max":
            choice = flat.argmax(-1)
        else:
            probs = (flat - flat.logsumexp(-1, keepdim=True)).exp()
            choice = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(
                probs.shape[:-1]
            )
        rest_dims = tuple(factor.dims[i] for i in rest)
        for i in reversed(range(len(axes))):
            values[factor.dims[axes[i]]] = Factor(choice % sizes[i], rest_dims)
            choice = torch.div(choice, sizes[i], rounding_mode="floor")
    return values
