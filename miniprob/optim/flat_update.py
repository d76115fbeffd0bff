"""Adam's and ClippedAdam's update over flat buffers, as tensor operations a compiled step holds.

A compiled SVI step (:mod:`miniprob.infer.compiled`) puts the optimizer's update into its
program. Written parameter by parameter, the update is some twenty operations and four stores
per parameter tensor, and TorchInductor lowers, schedules and builds each of them: for the
10-tensor VAE benchmark they were a third of a 12 s first compile. Adam is elementwise, so the
parameters that share an optimizer kind, its hyperparameters and a dtype are updated as one
tensor. A :class:`FlatGroup` moves them and their optimizer state into flat buffers, once:

- the parameters stay the same tensor objects (the param store's, a network's), re-pointed at
  slices of one buffer with ``.data``; the optimizer's state dicts hold views of the others;
- :meth:`FlatGroup.update`, traced into the program, is one loop over all the elements. A group
  holds parameters with one step count and one rate (the usual case: else they form groups of
  their own), so the update's scalars are the group's.

A tensor taken with ``.data`` before the move no longer follows its parameter; the objects do.
``torch.save`` of a parameter (a network's ``state_dict``) writes the group's whole buffer, as
for any view: clone the tensors to save them alone (the param store's ``get_state`` does).
:meth:`FlatGroup.sync`, at every step, moves in again whatever was replaced since (a checkpoint
loaded, a network moved with ``.to``).

Example::

    >>> import torch
    >>> a, b = torch.ones(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    >>> opts = [torch.optim.Adam([a]), torch.optim.Adam([b])]
    >>> for p, opt in zip((a, b), opts):
    ...     p.grad = torch.ones_like(p)
    ...     _ = opt.step()
    >>> FlatGroup.key(opts[0], a) == FlatGroup.key(opts[1], b)
    True
    >>> group = FlatGroup([0, 1], [a, b], opts, clips=[None, None])
    >>> group.sync([opts[0].state[a], opts[1].state[b]])
    True
    >>> parameters = group.inputs[0]
    >>> parameters.shape, a.data_ptr() == parameters.data_ptr(), a.is_leaf
    (torch.Size([5]), True, True)
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch

from .clipped_adam import ClippedAdam

__all__ = ["FlatGroup", "baked", "clip_gradient", "disjoint", "supported"]


def supported(opt: torch.optim.Optimizer) -> bool:
    """Whether a program can hold ``opt``'s update: a ``ClippedAdam``, or a ``torch.optim.Adam``
    with default flags, float hyperparameters and no step hooks; one parameter group."""
    if len(opt.param_groups) != 1:
        return False
    group = opt.param_groups[0]
    if type(opt) is ClippedAdam:
        return all(isinstance(group[k], (int, float)) for k in ("lr", "eps", "weight_decay", "lrd"))
    if type(opt) is not torch.optim.Adam:
        return False
    if opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks:
        return False
    beta1, beta2 = group["betas"]
    return (
        not group.get("amsgrad")
        and not group.get("capturable")
        and not group.get("differentiable")
        and not group.get("decoupled_weight_decay")
        and all(type(x) is float for x in (group["lr"], beta1, beta2, group["eps"]))
        and isinstance(group["weight_decay"], (int, float))
    )


_BAKED = ("betas", "eps", "weight_decay", "maximize", "clip_norm", "lrd", "centered_variance")


def baked(opt: torch.optim.Optimizer) -> tuple:
    """The hyperparameters a program bakes in (all but the rate, an input of the program)."""
    return (type(opt), *map(opt.param_groups[0].get, _BAKED))


def clip_gradient(grad: torch.Tensor, clip: dict[str, float]) -> torch.Tensor:
    """``clip_grad_norm_`` then ``clip_grad_value_`` on one gradient, as ``PyroOptim`` does."""
    if "clip_norm" in clip:
        norm = torch.linalg.vector_norm(grad)
        grad = grad * torch.clamp(clip["clip_norm"] / (norm + 1e-6), max=1.0)
    if "clip_value" in clip:
        grad = grad.clamp(-clip["clip_value"], clip["clip_value"])
    return grad


def disjoint(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether no two of ``tensors`` share memory (tied weights cannot move to two places)."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for t in tensors:
        if t.numel() == 0:
            continue
        if not t.is_contiguous():
            return False
        spans.setdefault(t.untyped_storage().data_ptr(), []).append(
            (t.storage_offset(), t.storage_offset() + t.numel())
        )
    for ranges in spans.values():
        ranges.sort()
        if any(end > start for (_, end), (start, _) in pairwise(ranges)):
            return False
    return True


def _packed(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One flat buffer with ``tensors``' values back to back, and their views of it: their own
    storage where they already lie so (another program packed them), else a new buffer."""
    numels = [t.numel() for t in tensors]
    total = sum(numels)
    first = tensors[0]
    storage = first.untyped_storage()
    at, in_place = 0, storage.nbytes() == total * first.element_size()
    for t, n in zip(tensors, numels, strict=True):
        in_place = (
            in_place
            and t.dtype == first.dtype
            and t.untyped_storage().data_ptr() == storage.data_ptr()
            and t.storage_offset() == at
            and t.is_contiguous()
        )
        at += n
    with torch.no_grad():
        if in_place:
            flat = first.new_empty(0).set_(storage, 0, (total,))
        else:
            flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    views = [v.view(t.shape) for v, t in zip(flat.split(numels), tensors, strict=True)]
    return flat, views


class FlatGroup:
    """Parameters of one optimizer kind, hyperparameters, dtype, step count and rate, updated as
    one flat tensor (their step counts and rates stay equal: the program updates all or none).

    :param indices: the parameters' positions among the program's leaves (where their
        gradients are).
    :param leaves: the parameters (unconstrained leaves), each with its own optimizer.
    :param optimizers: per parameter, its ``torch.optim.Adam`` or ``ClippedAdam``.
    :param clips: per parameter, ``PyroOptim``'s clipping arguments or ``None``.

    Its :attr:`inputs` (the program's inputs for it): the parameters' buffer, ``exp_avg``'s,
    ``exp_avg_sq``'s, and Adam's step counts (one per parameter, all equal).
    """

    def __init__(
        self,
        indices: list[int],
        leaves: list[torch.Tensor],
        optimizers: list[torch.optim.Optimizer],
        clips: list[dict | None],
    ) -> None:
        self.indices = indices
        self.leaves = leaves
        self.optimizers = optimizers
        self.clips = clips
        self.clipped_adam = type(optimizers[0]) is ClippedAdam
        self.baked = baked(optimizers[0])
        self.group = dict(optimizers[0].param_groups[0])
        self.keys = (
            ("exp_avg", "exp_avg_sq") if self.clipped_adam else ("exp_avg", "exp_avg_sq", "step")
        )
        self.shapes = [leaf.shape for leaf in leaves]
        self.states: list[torch.Tensor] = []  # the state tensors the buffers hold, in order
        self.pointers: tuple[int, ...] = ()
        self.inputs: list[torch.Tensor] = []
        self.steps_version = -1  # the step counts' version when last seen equal

    @staticmethod
    def key(opt: torch.optim.Optimizer, leaf: torch.Tensor) -> tuple:
        """What the parameters of one group share."""
        state = opt.state[leaf]
        if type(opt) is ClippedAdam:
            count = (state["step"], state["lr"])
        else:
            count = (float(state["step"]), opt.param_groups[0]["lr"])
        return (baked(opt), leaf.dtype, leaf.device, count)

    def sync(self, states: list[dict[str, Any]]) -> bool:
        """Before a step: ``states`` (each parameter's optimizer state dict) and the parameters
        are in the buffers, moved in again where something replaced them; ``False`` where they
        no longer fit the program (other shapes or dtypes, other hyperparameters, step counts
        that differ)."""
        if any(baked(opt) != self.baked for opt in self.optimizers):
            return False
        tensors = [state[k] for state in states for k in self.keys]
        if not all(map(operator.is_, tensors, self.states)) or (
            tuple(map(torch.Tensor.data_ptr, self.leaves)) != self.pointers
        ):
            if self.states and any(
                not isinstance(new, torch.Tensor)
                or (new.shape, new.dtype) != (old.shape, old.dtype)
                for new, old in zip(tensors, self.states, strict=True)
            ):
                return False
            if any(leaf.shape != s for leaf, s in zip(self.leaves, self.shapes, strict=True)):
                return False
            self._move_in(states)
        if not self.clipped_adam:
            steps = self.inputs[3]
            if steps._version != self.steps_version:  # changed outside the program
                if not bool((steps == steps[0]).all()):
                    return False
                self.seen()
        return True

    def seen(self) -> None:
        """After a step of the program: its own change of the step counts."""
        if not self.clipped_adam:
            self.steps_version = self.inputs[3]._version

    def _move_in(self, states: list[dict[str, Any]]) -> None:
        parameters, views = _packed(self.leaves)
        for leaf, view in zip(self.leaves, views, strict=True):
            if leaf.data_ptr() != view.data_ptr():
                leaf.data = view
        self.inputs = [parameters]
        for k in self.keys:
            buffer, views = _packed([state[k] for state in states])
            for state, view in zip(states, views, strict=True):
                state[k] = view
            self.inputs.append(buffer)
        self.states = [state[k] for state in states for k in self.keys]
        self.pointers = tuple(map(torch.Tensor.data_ptr, self.leaves))
        self.steps_version = -1

    def views(self, parameters: torch.Tensor) -> list[torch.Tensor]:
        """The parameters, as views of (the program's) ``parameters`` buffer."""
        numels = [shape.numel() for shape in self.shapes]
        return [v.view(s) for v, s in zip(parameters.split(numels), self.shapes, strict=True)]

    def update(
        self,
        inputs: Sequence[torch.Tensor],
        grads: list[torch.Tensor | None],
        rate: torch.Tensor,
        ok: torch.Tensor,
    ) -> None:
        """One update of the buffers in place, kept only where ``ok`` (a finite loss).

        ``grads``: per parameter, its gradient (``None``: zeros); ``rate``: the group's lr
        (Adam) or the step's signed step size (ClippedAdam, whose step count and decayed rate
        are Python numbers, advanced outside).
        """
        parameters, exp_avg, exp_avg_sq = inputs[:3]
        flat = []
        for grad, shape, clip in zip(grads, self.shapes, self.clips, strict=True):
            grad = parameters.new_zeros(shape) if grad is None else grad
            flat.append((clip_gradient(grad, clip) if clip else grad).reshape(-1))
        g = torch.cat(flat) if len(flat) > 1 else flat[0]
        group = self.group
        beta1, beta2 = group["betas"]
        rate = rate.to(parameters.dtype)
        if self.clipped_adam:
            g = g.clamp(-group["clip_norm"], group["clip_norm"])
        elif group.get("maximize"):
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * parameters
        if self.clipped_adam:
            new_avg = exp_avg * beta1 + (1 - beta1) * g
            spread = g - new_avg if group.get("centered_variance") else g
            new_sq = exp_avg_sq * beta2 + (1 - beta2) * spread * spread
            new_p = parameters + rate * new_avg / (new_sq.sqrt() + group["eps"])
        else:
            # torch.optim.Adam's single-tensor update, out of place.
            steps = inputs[3]
            step = steps[0] + 1
            bias1 = 1 - torch.pow(beta1, step)
            bias2 = 1 - torch.pow(beta2, step)
            new_avg = exp_avg.lerp(g, 1 - beta1)
            new_sq = exp_avg_sq * beta2 + (1 - beta2) * g * g
            denom = new_sq.sqrt() / bias2.sqrt() + group["eps"]
            new_p = parameters - (rate / bias1) * new_avg / denom
            steps.copy_(torch.where(ok, step, steps))
        exp_avg.copy_(torch.where(ok, new_avg, exp_avg))
        exp_avg_sq.copy_(torch.where(ok, new_sq, exp_avg_sq))
        parameters.copy_(torch.where(ok, new_p, parameters))
