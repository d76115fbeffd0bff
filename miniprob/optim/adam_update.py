"""Adam's update as ``torch.optim.Adam.step`` computes it, without that method's per-call work.

``torch.optim.Adam.step`` spends more time around the arithmetic than in it on small models:
a profiler scope, hooks, a pass that regroups state into lists, ``.item()`` through helper
layers. For 2 scalar parameters that is ~70 us of a ~460 us SVI step. :func:`adam_step` does the
same tensor operations in the same order on the optimizer's own state (so ``state_dict``,
checkpoints and LR schedulers see a ``torch.optim.Adam``), and leaves every case it does not
reproduce bitwise to ``step()``: a parameter's first update (which creates its state), options
other than the CPU defaults, tensor hyperparameters, hooks.

Adam is elementwise, so the update of many tensors is the update of one: once every parameter
of a group has state and the same step count, the group's state moves into flat buffers (the
optimizer's state tensors become views of them) and each operation runs once over all the
group's elements, instead of once per tensor (~1.5 us each, whatever the size: 8 of them per
parameter). Gradients and parameters are copied in and out around it. State tensors a caller
held before that no longer follow the optimizer's (read ``opt.state`` again, as ``state_dict``
does). Where that does not apply (parameters without a gradient this step, different step
counts, amsgrad, beta1 = 0, half-precision or mixed dtypes, parameters sharing memory) the
update runs tensor by tensor: torch's per-tensor loop below :data:`FOREACH_MIN_PARAMS`
parameters, its multi-tensor ("foreach") operations from there on, which give bitwise the same
numbers on CPU.

Example::

    >>> import torch
    >>> a, b = torch.tensor([1.0], requires_grad=True), torch.tensor([1.0], requires_grad=True)
    >>> opt_a, opt_b = torch.optim.Adam([a], lr=0.1), torch.optim.Adam([b], lr=0.1)
    >>> done = []
    >>> for _ in range(3):
    ...     a.grad, b.grad = a.detach() * 2, b.detach() * 2
    ...     _ = opt_a.step()
    ...     done.append(adam_step(opt_b))
    ...     if not done[-1]:  # the first update, which creates the state, is torch's
    ...         _ = opt_b.step()
    >>> done, torch.equal(a, b)
    ([False, True, True], True)
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

FOREACH_MIN_PARAMS = 6
"""From this many parameters in a group on, the multi-tensor update is the faster one."""

_FOREACH_EXACT = (torch.float32, torch.float64)
"""Dtypes for which torch's multi-tensor Adam gives its per-tensor loop's bits on CPU (half
types do not)."""

_DEFAULT_FLAGS = (
    ("capturable", False),
    ("differentiable", False),
    ("decoupled_weight_decay", False),
)


def _group_supported(group: dict) -> bool:
    if group.get("fused"):
        return False
    for key, default in _DEFAULT_FLAGS:
        if group.get(key, default) != default:
            return False
    beta1, beta2 = group["betas"]
    return (
        type(group["lr"]) is float
        and type(beta1) is float
        and type(beta2) is float
        and type(group["eps"]) is float
        and isinstance(group["weight_decay"], (int, float))
    )


def adam_step(opt: torch.optim.Optimizer) -> bool:
    """Update ``opt``'s parameters (those with a ``.grad``) as ``opt.step()`` would, bitwise.

    Returns ``False``, having changed nothing, where it does not apply (the caller then calls
    ``opt.step()``): ``opt`` not exactly a ``torch.optim.Adam``, step hooks, non-default flags,
    tensor hyperparameters, a parameter without state yet (or with a step count that is not a
    tensor), a sparse, complex or non-CPU tensor.
    """
    if type(opt) is not torch.optim.Adam:
        return False
    if (
        opt._optimizer_step_pre_hooks
        or opt._optimizer_step_post_hooks
        or _global_optimizer_pre_hooks
        or _global_optimizer_post_hooks
    ):
        return False
    flats = opt.__dict__.setdefault("_miniprob_flat", {})
    work = []
    for index, group in enumerate(opt.param_groups):
        if not _group_supported(group):
            flats.clear()
            return False
        flat = flats.get(index)
        if flat is not None and flat.matches(opt, group):
            work.append((group, flat, None, None))
            continue
        flats.pop(index, None)
        params, grads, states = [], [], []
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            state = opt.state.get(p)
            if (
                not state
                or grad.is_sparse
                or p.is_complex()
                or not p.is_cpu
                or not isinstance(state["step"], torch.Tensor)
                or not state["step"].is_cpu
            ):
                flats.clear()  # torch's step() will change the state
                return False
            params.append(p)
            grads.append(grad)
            states.append(state)
        if params:
            if len(params) == len(group["params"]) and _FlatState.applies(group, params, states):
                flats[index] = flat = _FlatState(opt, params, states)
                work.append((group, flat, None, None))
            else:
                work.append((group, params, grads, states))
    with torch.no_grad():
        for group, params, grads, states in work:
            if isinstance(params, _FlatState):
                params.step(group)
            elif len(params) >= FOREACH_MIN_PARAMS and all(
                p.dtype in _FOREACH_EXACT for p in params
            ):
                _multi_tensor(group, params, grads, states)
            else:
                _single_tensor(group, params, grads, states)
    # What the ``step`` an LR scheduler wraps would record: without it, the scheduler's first
    # ``step()`` after a resume warns that it came before the optimizer's.
    opt._opt_called = True
    return True


class _FlatState:
    """A group's Adam state in flat buffers, the optimizer's state tensors views of them.

    Valid while the group's parameters, their state dicts and the tensors in them are the
    ones it was built from (``load_state_dict`` and miniprob's state loading replace them)
    and every parameter has a gradient; built only where all step counts agree, which the
    flat update keeps so.
    """

    @staticmethod
    def group_applies(group: dict) -> bool:
        # amsgrad keeps a fourth state tensor (left to the per-tensor update); beta1 == 0 makes
        # lerp's weight 1, where its vectorized and scalar loops differ in the sign of a zero.
        return not group["amsgrad"] and group["betas"][0] > 0.0

    @classmethod
    def applies(cls, group: dict, params: list, states: list) -> bool:
        if not cls.group_applies(group):
            return False
        p0, s0 = params[0], states[0]
        dtype, step_dtype, step = p0.dtype, s0["step"].dtype, s0["step"].item()
        if dtype not in _FOREACH_EXACT:  # half types round differently in vectorized loops
            return False
        # Parameters that share memory (views of one tensor, one listed twice) are updated one
        # after the other by torch; copied in and out together they would not be.
        if len({p.untyped_storage().data_ptr() for p in params}) != len(params):
            return False
        for p, state in zip(params, states, strict=True):
            if (
                p.dtype != dtype
                or p.grad.dtype != dtype
                or p.grad.layout != torch.strided
                or state["exp_avg"].dtype != dtype
                or state["exp_avg_sq"].dtype != dtype
                or state["step"].dtype != step_dtype
                or state["step"].dim() != 0
                or state["step"].item() != step
            ):
                return False
        return True

    def __init__(self, opt: torch.optim.Optimizer, params: list, states: list) -> None:
        self.state_of = opt.state
        self.params = params
        self.states = states
        self.count = states[0]["step"].item()

        def buffer_and_views(dtype: torch.dtype) -> tuple[torch.Tensor, list]:
            buffer = torch.empty(sum(p.numel() for p in params), dtype=dtype)
            return buffer, torch._C._nn.unflatten_dense_tensors(buffer, params)

        self.exp_avg, self.exp_avg_views = buffer_and_views(params[0].dtype)
        self.exp_avg_sq, self.exp_avg_sq_views = buffer_and_views(params[0].dtype)
        self.param_buffer, self.param_views = buffer_and_views(params[0].dtype)
        self.grad_buffer, self.grad_views = buffer_and_views(params[0].dtype)
        self.denom = torch.empty_like(self.exp_avg)
        self.steps = torch.empty(len(params), dtype=states[0]["step"].dtype)
        self.step_views = list(self.steps.unbind())
        torch._foreach_copy_(self.exp_avg_views, [s["exp_avg"] for s in states])
        torch._foreach_copy_(self.exp_avg_sq_views, [s["exp_avg_sq"] for s in states])
        self.steps.fill_(self.count)
        self.dtype = params[0].dtype
        # What the step counts must read before the next flat update: anything else changed
        # them in place (torch's own step(), a hand edit), and the cache is stale.
        self.expected_steps = self.steps.clone()
        for state, exp_avg, exp_avg_sq, step in zip(
            states, self.exp_avg_views, self.exp_avg_sq_views, self.step_views, strict=True
        ):
            state["exp_avg"], state["exp_avg_sq"], state["step"] = exp_avg, exp_avg_sq, step

    def matches(self, opt: torch.optim.Optimizer, group: dict) -> bool:
        params = group["params"]
        if (
            opt.state is not self.state_of
            or len(params) != len(self.params)
            or not self.group_applies(group)
            or not torch.equal(self.steps, self.expected_steps)
        ):
            return False
        state_of, dtype = self.state_of, self.dtype
        for p, own, state, exp_avg, exp_avg_sq, step in zip(
            params,
            self.params,
            self.states,
            self.exp_avg_views,
            self.exp_avg_sq_views,
            self.step_views,
            strict=True,
        ):
            if (
                p is not own
                or p.grad is None
                or p.dtype is not dtype
                or state_of.get(p) is not state
                or state["exp_avg"] is not exp_avg
                or state["exp_avg_sq"] is not exp_avg_sq
                or state["step"] is not step
            ):
                return False
        return True

    def step(self, group: dict) -> None:
        """torch's per-tensor Adam, each operation over all the group's elements at once."""
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        torch._foreach_copy_(self.grad_views, [p.grad for p in self.params])
        torch._foreach_copy_(self.param_views, self.params)
        grad, param = self.grad_buffer, self.param_buffer
        if group["maximize"]:
            grad = -grad
        self.steps += 1
        self.expected_steps += 1
        self.count += 1
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(self.count)
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        # torch's ``(exp_avg_sq.sqrt() / c).add_(eps)``, the same kernels into one kept buffer
        denom = torch.sqrt(self.exp_avg_sq, out=self.denom).div_(bias_correction2_sqrt)
        param.addcdiv_(self.exp_avg, denom.add_(eps), value=-step_size)
        torch._foreach_copy_(self.params, self.param_views)


def _single_tensor(group: dict, params: list, grads: list, states: list) -> None:
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    amsgrad, maximize = group["amsgrad"], group["maximize"]
    for p, grad, state in zip(params, grads, states, strict=True):
        if maximize:
            grad = -grad
        step_t = state["step"]
        step_t += 1
        if weight_decay != 0:
            grad = grad.add(p, alpha=weight_decay)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if amsgrad:
            max_sq = state["max_exp_avg_sq"]
            torch.maximum(max_sq, exp_avg_sq, out=max_sq)
            denom = (max_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)


def _multi_tensor(group: dict, params: list, grads: list, states: list) -> None:
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    steps = [s["step"] for s in states]
    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]
    if group["maximize"]:
        grads = torch._foreach_neg(grads)
    torch._foreach_add_(steps, 1)
    if weight_decay != 0:
        if group["maximize"]:
            torch._foreach_add_(grads, params, alpha=weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    step_values = [s.item() for s in steps]
    step_size = [(lr / (1 - beta1**t)) * -1 for t in step_values]
    bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in step_values]
    if group["amsgrad"]:
        max_sqs = [s["max_exp_avg_sq"] for s in states]
        torch._foreach_maximum_(max_sqs, exp_avg_sqs)
        denom = torch._foreach_sqrt(max_sqs)
    else:
        denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)
