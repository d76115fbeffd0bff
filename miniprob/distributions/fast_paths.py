"""Shortcuts for the distributions every SVI step builds, bitwise the same as torch's code.

``Normal`` and ``Bernoulli`` are built and scored at nearly every site. torch's constructors
send their arguments through ``broadcast_all`` (type checks, then ``broadcast_tensors``) even
when they already agree, and ``Normal.log_prob`` negates the squared distance before dividing
it: one more op, and one more node for every backward pass to visit. The methods here take a
shortcut only where it cannot change a bit of a value or of a gradient, and leave every other
case (validation on, tensor subclasses, arguments still to broadcast, ``torch.jit.trace``) to
torch's code.

Why the shortcuts are exact: two plain tensors of one shape come out of ``broadcast_tensors``
as the same objects; ``a / (-2 * v)`` rounds to ``-(a / (2 * v))`` (IEEE division is symmetric
in sign and scaling by a power of two is exact), and so do its gradients, sign for sign.
A Normal (or LogNormal) built from a loc of +0 or a scale of 1 given as Python numbers notes
the tensors it made of them, and its ``log_prob`` leaves out ``value - 0``, ``log(1)`` and
``-2 * 1 ** 2`` while those tensors are the ones it made and their version counters show no
write. Writes that do not bump the counter (through ``.data``, or a NumPy array sharing the
memory) are not seen, as in :mod:`miniprob.validation`.
``tests/test_fast_paths.py`` compares values and gradients with torch's classes, bit for bit
(a NaN may carry the other sign bit: torch negates it, the shortcut does not).

Example::

    >>> import torch
    >>> import miniprob.distributions as dist
    >>> loc, scale = torch.zeros(3), torch.ones(3)
    >>> x = torch.tensor([0.0, 1.0, -2.0])
    >>> fast = dist.Normal(loc, scale).log_prob(x)
    >>> torch.equal(fast, torch.distributions.Normal(loc, scale).log_prob(x))
    True
"""

from __future__ import annotations

import math
from numbers import Number

import torch
from torch.distributions import Bernoulli, LogNormal, Normal
from torch.distributions.transforms import ExpTransform
from torch.nn.functional import binary_cross_entropy_with_logits

from .shape import TorchDistribution

_PLAIN = (torch.Tensor, torch.nn.Parameter)  # exact types: subclasses may override torch ops
_SCALARS = (float, int)
_NO_SHAPE = torch.Size()
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))  # torch's constant, computed the same way


def _scalar(value: float | int, like: torch.Tensor | None) -> torch.Tensor:
    """``torch.tensor(value, dtype=..., device=...)`` as ``broadcast_all`` makes it, twice as
    fast; ``scalar_tensor`` refuses values out of the dtype's range, where torch's gives inf."""
    dtype = torch.get_default_dtype() if like is None else like.dtype
    device = None if like is None else like.device
    if dtype.is_floating_point:
        try:
            return torch.scalar_tensor(value, dtype=dtype, device=device)
        except (RuntimeError, OverflowError):
            pass
    return torch.tensor(value, dtype=dtype, device=device)


def _broadcast_pair(a: object, b: object) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``broadcast_all(a, b)`` for plain tensors and Python numbers; None for anything else."""
    ta, tb = type(a), type(b)
    if ta in _PLAIN:
        if tb in _PLAIN:
            return (a, b) if a.shape == b.shape else torch.broadcast_tensors(a, b)
        if tb in _SCALARS:
            b = _scalar(b, a)
            return a, (b.expand(a.shape) if a.dim() else b)
    elif ta in _SCALARS:
        if tb in _PLAIN:
            a = _scalar(a, b)
            return (a.expand(b.shape) if b.dim() else a), b
        if tb in _SCALARS:
            return _scalar(a, None), _scalar(b, None)
    return None


def normal_init(
    self: Normal,
    loc: torch.Tensor | float,
    scale: torch.Tensor | float,
    validate_args: bool | None = None,
) -> None:
    """``Normal.__init__`` without ``broadcast_all``'s checks for tensors and numbers."""
    if not validate_args and not torch.jit.is_tracing():  # tracing: shapes are traced values
        pair = _broadcast_pair(loc, scale)
        if pair is not None:
            self.loc, self.scale = pair
            self._batch_shape, self._event_shape = self.loc.shape, _NO_SHAPE
            self._validate_args = False
            _mark(self, loc, scale)
            return
    Normal.__init__(self, loc, scale, validate_args=bool(validate_args))


def _mark(normal: Normal, loc: object, scale: object) -> None:
    """Note the tensors ``normal`` made of a loc of +0 and a scale of 1 (Python numbers)."""
    if type(loc) in _SCALARS and loc == 0 and math.copysign(1.0, loc) > 0:
        normal._zero_loc = normal.loc
    if type(scale) in _SCALARS and scale == 1:
        normal._unit_scale = normal.scale


def _still(marked: torch.Tensor | None, current: torch.Tensor) -> bool:
    """Whether ``current`` is the tensor ``marked`` at construction, not written to since
    (as its version counter tells: an inference-mode tensor has none, and is not trusted)."""
    return marked is current and not current.is_inference() and current._version == 0


def normal_log_prob(self: Normal, value: torch.Tensor) -> torch.Tensor:
    """torch's Normal log density with the negation folded into the divisor, and without the
    ops that a loc of +0 or a scale of 1 (given as numbers) make identities."""
    if self._validate_args:
        return Normal.log_prob(self, value)
    loc, scale = self.loc, self.scale
    # (getattr: a LogNormal's base is torch's own Normal, without the marks)
    zero = _still(getattr(self, "_zero_loc", None), loc)
    unit = _still(getattr(self, "_unit_scale", None), scale)
    # A loc of +0 and a scale of 1 given as numbers: ``value - 0`` is ``value``, ``log(1)`` is
    # 0 and ``-2 * 1 ** 2`` is -2, so those ops (and their nodes) go, where that changes no bit.
    exact = (
        (zero or unit)
        and type(value) in _PLAIN
        and value.dtype == loc.dtype
        and _covers(value.shape, self._batch_shape)  # else the ops' backward sums differ
    )
    x = value if exact and zero else value - loc
    if exact and unit:
        return x.pow(2).div(-2.0) - _LOG_SQRT_2PI
    return x.pow(2).div(-2 * scale.pow(2)) - scale.log() - _LOG_SQRT_2PI


def _covers(shape: torch.Size, batch_shape: torch.Size) -> bool:
    """Whether a value of ``shape`` broadcast against ``batch_shape`` keeps its shape."""
    n = len(batch_shape)
    return len(shape) >= n and shape[len(shape) - n :] == batch_shape


def _expanded_normal(d: Normal, batch_shape: torch.Size) -> Normal:
    """What torch's ``Normal.expand`` builds (views of loc and scale, no validation), without
    its instance checks and ``__init__`` chain; the marks of a loc of 0 and a scale of 1 go
    along."""
    new = type(d).__new__(type(d))
    new.loc, new.scale = d.loc.expand(batch_shape), d.scale.expand(batch_shape)
    new._batch_shape, new._event_shape = batch_shape, _NO_SHAPE
    new._validate_args = d._validate_args
    _carry_marks(d, new)
    return new


def _carry_marks(d: Normal, expanded: Normal) -> None:
    if _still(getattr(d, "_zero_loc", None), d.loc):
        expanded._zero_loc = expanded.loc
    if _still(getattr(d, "_unit_scale", None), d.scale):
        expanded._unit_scale = expanded.scale


def normal_expand(self: Normal, batch_shape: torch.Size, _instance: Normal | None = None) -> Normal:
    """torch's ``Normal.expand``, keeping the marks of a loc of 0 and a scale of 1."""
    if _instance is not None:  # a subclass's expand has made the instance to fill
        new = TorchDistribution.expand(self, batch_shape, _instance)
        _carry_marks(self, new)
        return new
    return _expanded_normal(self, torch.Size(batch_shape))


def log_normal_expand(
    self: LogNormal, batch_shape: torch.Size, _instance: LogNormal | None = None
) -> LogNormal:
    """torch's ``LogNormal.expand`` (its Normal expanded, the same transforms) built directly."""
    base, transforms = self.base_dist, self.transforms
    if (
        _instance is not None
        or type(base).expand not in (Normal.expand, normal_expand)
        or len(transforms) != 1
        or type(transforms[0]) is not ExpTransform
    ):
        return TorchDistribution.expand(self, batch_shape, _instance)
    batch_shape = torch.Size(batch_shape)
    new = type(self).__new__(type(self))
    new.base_dist, new.transforms = _expanded_normal(base, batch_shape), transforms
    new._batch_shape, new._event_shape = batch_shape, self._event_shape
    new._validate_args = self._validate_args
    return new


def normal_rsample(self: Normal, sample_shape: torch.Size = _NO_SHAPE) -> torch.Tensor:
    """torch's ``Normal.rsample`` (the same draw: ``empty().normal_()``) without its shape
    arithmetic for a single draw."""
    if sample_shape or torch.jit.is_tracing():  # tracing: torch draws another way
        return Normal.rsample(self, sample_shape)
    loc = self.loc
    eps = torch.empty(self._batch_shape, dtype=loc.dtype, device=loc.device).normal_()
    return loc + eps * self.scale


def log_normal_init(
    self: LogNormal,
    loc: torch.Tensor | float,
    scale: torch.Tensor | float,
    validate_args: bool | None = None,
) -> None:
    """torch's ``LogNormal.__init__``; a loc of +0 and a scale of 1 are noted on its Normal."""
    # None would let the Normal inside validate at every call (see miniprob.distributions)
    validate_args = False if validate_args is None else validate_args
    LogNormal.__init__(self, loc, scale, validate_args=validate_args)
    if not validate_args and not torch.jit.is_tracing():
        _mark(self.base_dist, loc, scale)


def log_normal_log_prob(self: LogNormal, value: torch.Tensor) -> torch.Tensor:
    """``TransformedDistribution.log_prob`` written out for LogNormal's one ``exp``."""
    if self._validate_args:
        return LogNormal.log_prob(self, value)
    x = value.log()
    return (0.0 - x) + normal_log_prob(self.base_dist, x)


def bernoulli_init(
    self: Bernoulli,
    probs: torch.Tensor | Number | None = None,
    logits: torch.Tensor | Number | None = None,
    validate_args: bool | None = None,
) -> None:
    """``Bernoulli.__init__`` without ``broadcast_all`` for one plain tensor."""
    if not validate_args:
        if probs is None and type(logits) in _PLAIN:
            self.logits = self._param = logits
        elif logits is None and type(probs) in _PLAIN:
            self.probs = self._param = probs
        else:
            Bernoulli.__init__(self, probs, logits, validate_args=False)
            return
        self._batch_shape, self._event_shape = self._param.shape, _NO_SHAPE
        self._validate_args = False
        return
    Bernoulli.__init__(self, probs, logits, validate_args=validate_args)


def bernoulli_log_prob(self: Bernoulli, value: torch.Tensor) -> torch.Tensor:
    """torch's Bernoulli log density, without broadcasting a value of the logits' shape."""
    if not self._validate_args and type(value) in _PLAIN and not torch.jit.is_tracing():
        logits = self.logits
        if logits.shape == value.shape:
            return -binary_cross_entropy_with_logits(logits, value, reduction="none")
    return Bernoulli.log_prob(self, value)


FAST_METHODS = {
    "Normal": {
        "__init__": normal_init,
        "log_prob": normal_log_prob,
        "rsample": normal_rsample,
        "expand": normal_expand,
        # the tensors built from a loc of +0 and a scale of 1 (see normal_log_prob)
        "_zero_loc": None,
        "_unit_scale": None,
    },
    "LogNormal": {
        "__init__": log_normal_init,
        "log_prob": log_normal_log_prob,
        "expand": log_normal_expand,
    },
    "Bernoulli": {"__init__": bernoulli_init, "log_prob": bernoulli_log_prob},
}
