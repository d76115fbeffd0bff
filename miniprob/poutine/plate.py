"""``plate``: conditional independence, automatic batch dims, broadcasting and subsampling.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> data = torch.randn(100)
    >>> def model():
    ...     with pyro.plate("data", 100, subsample_size=10) as idx:
    ...         return pyro.sample("obs", dist.Normal(0.0, 1.0), obs=data[idx])
    >>> model().shape
    torch.Size([10])
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any

import torch
from torch.distributions import Distribution, constraints

from ..runtime import (
    CondIndepStackFrame,
    Message,
    Messenger,
    apply_stack,
    dim_allocator,
    new_message,
)
from ..validation import is_validation_enabled
from .trace_struct import Trace


class PlateSizeError(ValueError, ZeroDivisionError):
    """A plate of size 0: a ``ValueError``, and the ``ZeroDivisionError`` Pyro raises."""


class _Subsample(Distribution):
    """The random indices of a subsampled plate; its log density is zero."""

    arg_constraints: dict = {}
    support = constraints.dependent
    has_rsample = False

    def __init__(self, size: int, subsample_size: int | None, device: Any = None) -> None:
        self.size = size
        self.subsample_size = subsample_size
        self.device = device
        super().__init__(validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if self.subsample_size is None or self.subsample_size >= self.size:
            return torch.arange(self.size, device=self.device)
        return torch.randperm(self.size, device=self.device)[: self.subsample_size]

    def __call__(self) -> torch.Tensor:
        return self.sample()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=self.device)


def _checked_count(name: str, what: str, value: Any) -> Any:
    """``value`` if it is a positive int (or a positive integer tensor holding one number,
    as under tracing), else ``ValueError`` naming the plate: a fractional size would rescale log
    densities by a fraction, a zero one divide by zero."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.is_complex():
            raise ValueError(
                f"plate '{name}': {what} must be a positive int, got a tensor of dtype "
                f"{value.dtype} and shape {tuple(value.shape)}"
            )
        if not torch.jit.is_tracing() and int(value) <= 0:
            raise ValueError(f"plate '{name}': {what} must be a positive int, got {int(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"plate '{name}': {what} must be a positive int, got {type(value).__name__} {value!r}"
        )
    if value <= 0:
        raise ValueError(f"plate '{name}': {what} must be a positive int, got {value}")
    return int(value)


def prune_subsample_sites(trace: Trace) -> Trace:
    """A copy of ``trace`` without the index sites of subsampled plates."""
    pruned = Trace(trace.graph_type)
    pruned.nodes = {
        name: site
        for name, site in trace.nodes.items()
        if not (site["type"] == "sample" and isinstance(site["fn"], _Subsample))
    }
    if trace._succ or trace._pred:  # a graph: keep the edges between the sites kept
        kept = pruned.nodes
        for site1, site2 in trace.edges:
            if site1 in kept and site2 in kept:
                pruned.add_edge(site1, site2)
    return pruned


class plate(Messenger):
    """A plate of ``size`` conditionally independent elements, vectorized or iterated.

    - ``with plate(...) as idx``: sites inside get a batch dim (``dim``, allocated from the
      right when None); distributions are expanded to cover it; ``idx`` holds the indices.
    - ``for i in plate(...)``: a sequential plate, one context per element.
    - ``subsample_size`` draws a random subset of indices (shared by model and guide through
      replay) and scales log densities by ``size / subsample_size``; ``subsample`` gives them.

    :param name: unique name of the plate.
    :param size: the full size (None: any size, no broadcasting).
    :param subsample_size: how many indices to draw, without replacement.
    :param subsample: explicit indices (a 1-D LongTensor).
    :param dim: the batch dim to use, counted from the right (negative).
    """

    def __init__(
        self,
        name: str,
        size: int | None = None,
        subsample_size: int | None = None,
        subsample: torch.Tensor | None = None,
        dim: int | None = None,
        use_cuda: bool | None = None,
        device: Any = None,
    ) -> None:
        super().__init__()
        if dim is not None and dim >= 0:
            raise ValueError(
                f"Expected dim < 0 to index from the right, actual {dim} (plate '{name}')"
            )
        if size is not None:
            if size == 0 and not isinstance(size, torch.Tensor):
                raise PlateSizeError(
                    f"plate '{name}': size must be a positive int, got 0 (size cannot be zero)"
                )
            size = _checked_count(name, "size", size)
        if subsample_size is not None:
            subsample_size = _checked_count(name, "subsample_size", subsample_size)
        if use_cuda and device is None:
            device = "cuda"
        self.name = name
        self.dim = dim
        self.device = device
        self.counter = 0
        self._vectorized: bool | None = None
        self._indices: torch.Tensor | None = None
        if size is None:
            if subsample_size is not None or subsample is not None:
                raise ValueError(f"plate '{name}': subsampling needs a size")
            self.size = self.subsample_size = -1
            return
        self.size = size
        if subsample is not None:
            subsample = torch.as_tensor(subsample)
            if subsample.dim() != 1 or subsample.numel() == 0:
                raise ValueError(
                    f"plate '{name}': subsample must be a non-empty 1-D tensor of indices, got "
                    f"shape {tuple(subsample.shape)}"
                )
            if subsample.is_floating_point() or subsample.is_complex():
                raise ValueError(
                    f"plate '{name}': subsample must hold integer indices, got dtype "
                    f"{subsample.dtype}"
                )
            if (
                is_validation_enabled()
                and subsample.numel()
                and (bool(subsample.min() < 0) or bool(subsample.max() >= size))
            ):
                raise ValueError(
                    f"plate '{name}': subsample indices must lie in [0, {size}), got "
                    f"min {int(subsample.min())}, max {int(subsample.max())}"
                )
            if subsample_size is not None and subsample_size != len(subsample):
                raise ValueError(
                    f"plate '{name}': subsample_size={subsample_size} does not match "
                    f"len(subsample)={len(subsample)}"
                )
        # The indices are a sample site (as in Pyro), so that replay gives the model the
        # guide's subsample, whether or not the model's own plate asks for one.
        msg = new_message("sample", name, _Subsample(size, subsample_size, device), value=subsample)
        apply_stack(msg)
        self._indices = msg["value"]
        self.subsample_size = len(self._indices)
        if subsample_size is not None and min(subsample_size, size) != self.subsample_size:
            raise ValueError(
                f"plate '{name}': subsample_size={subsample_size} but the replayed subsample has "
                f"{self.subsample_size} indices (do the model and guide use different "
                "subsample sizes?)"
            )

    @property
    def indices(self) -> torch.Tensor:
        """The indices of this plate's elements (the subsample, when subsampled)."""
        return self._indices

    def _frame(self) -> CondIndepStackFrame:
        return CondIndepStackFrame(
            self.name, self.dim, self.subsample_size, self.counter, self.size
        )

    def __enter__(self) -> torch.Tensor | None:
        if self._vectorized is False:
            raise ValueError(
                f"plate '{self.name}' is already used as a sequential (iterated) plate"
            )
        self._vectorized = True
        self.dim = dim_allocator().allocate(self.name, self.dim)
        self._set_frame()
        super().__enter__()
        return None if self.size == -1 else self.indices

    def _set_frame(self) -> None:
        self.frame = self._frame()
        self._scaled = self.size != self.subsample_size

    def __exit__(self, *exc: Any) -> None:
        if self._vectorized:
            dim_allocator().free(self.name, self.dim)
        super().__exit__(*exc)

    def __iter__(self) -> Iterator[int]:
        if self._vectorized:
            raise ValueError(f"plate '{self.name}' cannot be both vectorized and iterated")
        if self.size == -1:
            raise ValueError(f"plate '{self.name}' needs a size to be iterated")
        self._vectorized = False
        self.dim = None
        for i in self.indices.tolist():
            self.counter += 1
            self._set_frame()
            Messenger.__enter__(self)
            try:
                yield i
            finally:
                Messenger.__exit__(self, None, None, None)

    def process_message(self, msg: Message) -> None:
        msg["cond_indep_stack"] = (self.frame,) + msg["cond_indep_stack"]
        if self._scaled:
            msg["scale"] = msg["scale"] * self.size / self.subsample_size

    def postprocess_message(self, msg: Message) -> None:
        # A param declared with event_dim inside a subsampled plate is subsampled with it, and
        # so is the data of a ``subsample`` statement.
        if msg["type"] not in ("param", "subsample") or self.dim is None:
            return
        event_dim = msg["kwargs"].get("event_dim")
        if event_dim is None:
            return
        dim = self.dim - event_dim
        value = msg["value"]
        shape = value.shape
        if len(shape) >= -dim and shape[dim] != 1:
            if shape[dim] != self.size and msg["type"] == "subsample":
                raise ValueError(
                    f"Inside pyro.plate({self.name}, {self.size}, dim={self.dim}) invalid shape "
                    f"of pyro.subsample(..., event_dim={event_dim}): {shape}"
                )
            if shape[dim] != self.size:
                raise ValueError(
                    f"Inside pyro.plate({self.name}, {self.size}, dim={self.dim}) invalid shape "
                    f"of pyro.param({msg['name']}, ..., event_dim={event_dim}): {shape}: "
                    f"param '{msg['name']}' inside plate '{self.name}' has size {shape[dim]} at "
                    f"dim {dim}, expected {self.size} or 1"
                )
            if self.subsample_size < self.size:
                msg["value"] = value.index_select(dim, self.indices.to(value.device))
