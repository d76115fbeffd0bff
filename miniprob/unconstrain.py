"""Constrained values held as unconstrained leaves: the one mechanism behind the ParamStore,
:class:`~miniprob.deferred.Constrained` and :class:`~miniprob.nn.PyroParam`.

A value satisfying a constraint is kept as the leaf ``u = transform.inv(value)``, where
``transform`` is ``transform_to(constraint)``; optimizers update ``u`` and reading computes
``transform(u)`` afresh. An init value is accepted when it and its unconstrained value are
finite. This is Pyro's rule: an init outside the support whose inverse is still finite (a vector
not summing to one, for ``simplex``) is accepted and reads back as ``transform(transform.inv(
init))``, while ``-1`` for ``positive`` (``log(-1)`` is NaN) is refused with an error naming the
owner.

Example::

    >>> import torch
    >>> from torch.distributions import constraints
    >>> t = constraint_transform("param 's'", constraints.positive)
    >>> unconstrain("param 's'", torch.tensor(1.0), constraints.positive, t).item()
    0.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import constraints
from torch.distributions.constraint_registry import transform_to
from torch.distributions.transforms import AffineTransform, ComposeTransform, Transform


def constraint_transform(owner: str, constraint: constraints.Constraint) -> Transform:
    """``transform_to(constraint)`` without its identity steps; ``owner`` names the parameter in
    the error raised when no transform is registered.

    Example::

        >>> from torch.distributions import constraints
        >>> constraint_transform("param 's'", constraints.positive)
        ExpTransform()
    """
    try:
        return simplified(transform_to(constraint))
    except NotImplementedError:
        raise ValueError(
            f"{owner}: no transform to the constraint {constraint} is registered, so it cannot "
            "be optimized unconstrained (register one with transform_to.register)"
        ) from None


def simplified(transform: Transform) -> Transform:
    """``transform`` without the identity affine steps.

    torch's transform to ``positive`` is ``exp`` followed by ``0 + 1 * y``: a parameter is read
    at every step, and the two identity ops would cost time at each read and add two nodes to
    the graph. ``exp`` never returns -0.0, so values and gradients are bitwise the same without
    them.

    Example::

        >>> from torch.distributions import constraints, transform_to
        >>> simplified(transform_to(constraints.positive))
        ExpTransform()
    """
    if not isinstance(transform, ComposeTransform):
        return transform
    parts = [
        t
        for t in transform.parts
        if not (isinstance(t, AffineTransform) and _is_number(t.loc, 0) and _is_number(t.scale, 1))
    ]
    if len(parts) == len(transform.parts):
        return transform
    return parts[0] if len(parts) == 1 else ComposeTransform(parts)


def _is_number(x: Any, value: float) -> bool:
    return isinstance(x, (int, float)) and x == value


def unconstrain(
    owner: str, init: Any, constraint: constraints.Constraint, transform: Transform
) -> torch.Tensor:
    """The unconstrained value ``transform.inv(init)``, detached and contiguous, after checking
    that ``init`` and it are finite (the error names ``owner``). An ``init`` that ``transform``
    leaves unchanged (a real parameter) is returned as it is when it is a leaf.

    Example::

        >>> import torch
        >>> from torch.distributions import constraints
        >>> t = constraint_transform("param 'p'", constraints.simplex)
        >>> u = unconstrain("param 'p'", torch.tensor([0.2, 0.2]), constraints.simplex, t)
        >>> t(u).tolist()                    # outside the support: accepted, as in Pyro
        [0.5, 0.5]
        >>> exp = constraint_transform("param 's'", constraints.positive)
        >>> unconstrain("param 's'", -1.0, constraints.positive, exp)
        Traceback (most recent call last):
        ...
        ValueError: param 's': init value lies outside the support of the constraint ...
    """
    if not isinstance(init, torch.Tensor):
        try:
            init = torch.as_tensor(init)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{owner}: init value should be a tensor, got {init!r}") from e
    if not init.is_floating_point() and not init.is_complex():
        init = init.to(torch.get_default_dtype())
    with torch.no_grad():
        if not bool(torch.isfinite(init).all()):
            raise ValueError(f"{owner}: init value is not finite: {_show(init)}")
        u = transform.inv(init)
        if not bool(torch.isfinite(u).all()):
            raise ValueError(
                f"{owner}: init value lies outside the support of the constraint {constraint} "
                f"(its unconstrained value is not finite): {_show(init)}"
            )
        if u is init and not init.is_leaf:
            u = init.detach()
        return u.contiguous()


def _show(value: torch.Tensor) -> str:
    return str(value.item()) if value.dim() == 0 else str(value)
