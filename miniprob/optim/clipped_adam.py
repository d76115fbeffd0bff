"""``ClippedAdam``: Adam with element-wise gradient clipping and a per-step learning-rate decay.

Each parameter's learning rate decays by ``lrd`` at every step that reads it (updated, or read
with no gradient: see :meth:`ClippedAdam.note_skipped`), as with Pyro's one optimizer per
parameter, so grouping parameters changes nothing.

Example::

    >>> import torch
    >>> p = torch.nn.Parameter(torch.tensor([1.0]))
    >>> opt = ClippedAdam([p], lr=0.1, clip_norm=1.0, lrd=0.9)
    >>> p.grad = torch.tensor([100.0]); opt.step()
    >>> round(p.item(), 4)
    0.91
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class ClippedAdam(torch.optim.Optimizer):
    """Adam whose gradients are clamped to ``[-clip_norm, clip_norm]`` and whose ``lr`` decays.

    :param lr: learning rate; the k-th update of a parameter uses ``lr * lrd**k``.
    :param betas: Adam's moment decay rates.
    :param clip_norm: bound on each gradient element's magnitude.
    :param lrd: learning-rate decay per update.
    :param centered_variance: track the variance of the gradient around its running mean,
        ``(g - m)**2``, instead of its raw second moment ``g**2``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_norm: float = 10.0,
        lrd: float = 1.0,
        centered_variance: bool = False,
    ) -> None:
        if not clip_norm > 0:
            raise ValueError(f"ClippedAdam: clip_norm must be positive, got {clip_norm}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            clip_norm=clip_norm,
            lrd=lrd,
            centered_variance=centered_variance,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                    state.setdefault("lr", group["lr"])
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                elif "lr" not in state:  # a state saved by Pyro: the rate lives in the group
                    state["lr"] = group["lr"]
                state["lr"] *= group["lrd"]
                state["step"] += 1
                grad = p.grad.clamp_(-group["clip_norm"], group["clip_norm"])
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                if group.get("centered_variance"):
                    spread = grad - exp_avg
                    exp_avg_sq.mul_(beta2).addcmul_(spread, spread, value=1 - beta2)
                else:
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                bias1 = 1 - beta1 ** state["step"]
                bias2 = 1 - beta2 ** state["step"]
                p.addcdiv_(exp_avg, denom, value=-state["lr"] * math.sqrt(bias2) / bias1)
        return loss

    def note_skipped(self, params: Iterable[torch.Tensor]) -> None:
        """Decay the rate of ``params``, read in a step but given no gradient: Pyro's
        ``ClippedAdam`` decays its rate at every step of a parameter's optimizer, gradient or
        not (``PyroOptim`` calls this)."""
        for p in params:
            group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
            state = self.state[p]
            state["lr"] = state.get("lr", group["lr"]) * group["lrd"]
