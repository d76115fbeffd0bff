"""Data-parallel SVI on ``torch.distributed``: ``DistributedOptimizer(optim)``.

Every rank (a process started by ``torchrun``, on one machine or many) runs the ordinary
``SVI.step`` on its own shard of the data, with a subsampled ``plate`` whose full size is the
global number of data points, so that each rank's loss estimates the loss of the whole data
set. The optimizer does the rest: it averages the ranks' gradients with one flat all-reduce
per step, then takes the wrapped optimizer's step on every rank, so the parameters stay equal
everywhere without ever being sent again. They start equal because each one is broadcast from
rank 0 the first time a step reads it, before it is used: parameters created lazily inside the
model or guide (``pyro.param``, ``pyro.module``) included. This is Pyro's ``HorovodOptimizer``
on PyTorch's own process groups (``gloo`` on CPU, ``nccl`` on GPU), without Horovod.

The mechanism under it all is one small exchange: before each step's gradients, and before
each first-read broadcast, every rank all-reduces a row of integers saying what it is doing
(which step, which parameters, whether it failed). Ranks that disagree (another model, a
parameter read on one rank only, a different order) or a rank whose step raised make every
rank raise :class:`DistributedStepError`, naming the ranks and the parameters, instead of
waiting forever in a mismatched collective; the failing rank raises its own error. A rank
that dies without raising (killed, out of memory) is noticed by the process group: set its
``timeout`` (``init_process_group(..., timeout=timedelta(minutes=5))``) to bound the wait.
Processes started with different world sizes never form a group: ``init_process_group``
fails after that timeout, saying how many joined ("2/3 clients joined"); a checkpoint written
by another number of ranks is refused by ``load_checkpoint``, naming both numbers.

Shard the data with ``DataLoader(dataset, batch_size, sampler=DistributedSampler(dataset))``
and pass each batch (with its indices) to ``plate("data", N, subsample=indices)``. Each rank
draws its own random numbers: seed each rank differently (``set_rng_seed(seed + rank)``) for
independent Monte Carlo noise. ``save_checkpoint(path, optim=distributed_optim)`` is
collective (every rank calls it; rank 0 writes, with each rank's RNG state);
``load_checkpoint`` on every rank resumes it. A wrapped scheduler goes to both as
``scheduler=`` itself (``scheduler.step()`` is called on it, or on the wrapper, alike).

Example (one process, world size 1)::

    >>> import os, torch, torch.distributed as dist, miniprob as pyro
    >>> import miniprob.distributions as d
    >>> from miniprob.infer import SVI, Trace_ELBO
    >>> from miniprob.optim import Adam, DistributedOptimizer
    >>> os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    >>> dist.init_process_group("gloo", rank=0, world_size=1)
    >>> pyro.clear_param_store()
    >>> def model(x):
    ...     with pyro.plate("data", 100, subsample=torch.arange(len(x))):
    ...         pyro.sample("obs", d.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0), obs=x)
    >>> svi = SVI(model, lambda x: None, DistributedOptimizer(Adam({"lr": 0.1})), Trace_ELBO())
    >>> for _ in range(100):
    ...     _ = svi.step(torch.full((10,), 2.0))
    >>> round(pyro.param("loc").item(), 1)
    2.0
    >>> dist.destroy_process_group()
"""

from __future__ import annotations

import socket
import weakref
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist

from ..params import _CURRENT, get_param_store
from ..runtime import Message, Messenger
from .optim import PyroOptim

# What a rank is doing at an exchange.
_STEP, _READ, _SAVE, _FAILED = 1, 2, 3, 4
_DOING = {_STEP: "ends its step", _SAVE: "saves a checkpoint"}
# The columns of an exchange's rows.
_KIND, _FAILED_FLAG, _SIGNATURE, _NUMEL, _COUNT = range(5)


class DistributedStepError(RuntimeError):
    """Raised on every rank when the ranks cannot go on together: a rank failed, or the
    ranks disagree on what to do. ``ranks`` holds the ranks that failed or disagree."""

    def __init__(self, message: str, ranks: Iterable[int] = ()) -> None:
        super().__init__(message)
        self.ranks = tuple(ranks)


def _free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a local process group)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signature(text: str) -> int:
    return zlib.crc32(text.encode())


def _describe_params(names: list[str], shapes: list[tuple]) -> str:
    return ", ".join(f"'{n}' {tuple(s)}" for n, s in zip(names, shapes, strict=True)) or "none"


class _FirstReadSync(Messenger):
    """Around each step's loss: broadcast each parameter from rank 0 the first time the step
    reads it, creating it first when the store lacks it, so that it is used with rank 0's
    value on every rank. A parameter is known by its name and leaf: one created again under
    the same name (after ``clear_param_store``) is broadcast again. Later reads cost two
    dict lookups."""

    def __init__(self, owner: DistributedOptimizer) -> None:
        super().__init__()
        self.owner = owner
        self.synced: dict[str, weakref.ref] = {}  # name -> the leaf that was broadcast

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "param" or msg["value"] is not None:
            return
        name = msg["name"]
        store = _CURRENT.get()
        synced = self.synced.get(name)
        if synced is not None and synced() is store._params.get(name):
            return
        if name not in store:
            msg["fn"](*msg["args"], **msg["kwargs"])  # creates it; read again after the sync
        self.owner._sync_leaf(name, store.unconstrained(name))

    def is_synced(self, name: str, leaf: torch.Tensor) -> bool:
        synced = self.synced.get(name)
        return synced is not None and synced() is leaf


class DistributedOptimizer(PyroOptim):
    """Wrap ``optim`` (any ``miniprob.optim`` optimizer or scheduler) for data-parallel SVI:
    gradients are averaged over the ranks of ``group`` before each step, and parameters are
    broadcast from rank 0 when first read. Use it with the ordinary ``SVI``.

    :param optim: the optimizer every rank steps with the averaged gradients.
    :param group: a ``torch.distributed`` process group; None for the default group (which
        must be initialized: ``torch.distributed.init_process_group``).

    Example::

        >>> import os, torch.distributed as dist
        >>> from miniprob.optim import Adam, DistributedOptimizer
        >>> os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        >>> dist.init_process_group("gloo", rank=0, world_size=1)
        >>> opt = DistributedOptimizer(Adam({"lr": 0.01}))
        >>> opt.rank, opt.world_size
        (0, 1)
        >>> dist.destroy_process_group()
    """

    def __init__(self, optim: PyroOptim, group: Any = None) -> None:
        if not isinstance(optim, PyroOptim) or isinstance(optim, DistributedOptimizer):
            raise TypeError(
                f"DistributedOptimizer wraps a miniprob.optim optimizer, got {type(optim).__name__}"
            )
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "DistributedOptimizer: torch.distributed is not initialized; call "
                "torch.distributed.init_process_group first (torchrun sets its arguments)"
            )
        self.optim = optim
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self._src = 0 if group is None else dist.get_global_rank(group, 0)
        # A group of one has nobody to agree with: the wrapped optimizer's step, nothing more.
        self._param_sync = _FirstReadSync(self) if self.world_size > 1 else None
        self._steps = 0
        self._last_params: list[torch.Tensor] = []
        self._last_names: list[str] = []
        self._last_signature = 0

    def __getattr__(self, name: str) -> Any:
        # Everything else (``step`` of a scheduler, ``_pending``, ...) is the wrapped one's.
        optim = self.__dict__.get("optim")
        if optim is None:
            raise AttributeError(name)
        return getattr(optim, name)

    # ---- the step ------------------------------------------------------------------------
    def __call__(self, params: Iterable[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        """Average the gradients of ``params`` over the ranks, then step the wrapped optimizer
        (every rank, the same update)."""
        if self._param_sync is None:
            self.optim(params, *args, **kwargs)
            return
        params = list(params)
        names = self._names(params)
        for name, p in zip(names, params, strict=True):
            if not self._param_sync.is_synced(name, p):  # read where the sync could not see it
                self._sync_leaf(name, p)
        numel = sum(p.numel() for p in params)
        self._exchange(_STEP, self._last_signature, numel, lambda: (names, params))
        self._average_gradients(params)
        self.optim(params, *args, **kwargs)
        # Counted once the update is done: a rank whose update raised stays behind, and the
        # next exchange says so (its parameters are no longer the others').
        self._steps += 1

    def _names(self, params: list[torch.Tensor]) -> list[str]:
        """The store names of ``params`` (the last step's, when they are the same tensors)."""
        last = self._last_params
        if len(params) == len(last) and all(p is q for p, q in zip(params, last, strict=True)):
            return self._last_names
        name_of = get_param_store().param_name
        names = [name_of(p) or f"<tensor {i} of the step>" for i, p in enumerate(params)]
        text = "\n".join(f"{n}{tuple(p.shape)}" for n, p in zip(names, params, strict=True))
        self._last_params, self._last_names = params, names
        self._last_signature = _signature(text)
        return names

    def _average_gradients(self, params: list[torch.Tensor]) -> None:
        """One flat all-reduce (per dtype) of the gradients and of a has-gradient flag per
        parameter; a parameter with a gradient on no rank keeps none."""
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for p in params:
            by_dtype.setdefault(p.dtype, []).append(p)
        for dtype, group in by_dtype.items():
            pieces = []
            for p in group:
                if p.grad is None:
                    pieces.append(torch.zeros(p.numel(), dtype=dtype, device=p.device))
                elif p.grad.is_sparse:
                    raise TypeError(
                        f"DistributedOptimizer: param '{get_param_store().param_name(p)}' has a "
                        "sparse gradient; only dense gradients are averaged"
                    )
                else:
                    pieces.append(p.grad.reshape(-1))
            flags = [0.0 if p.grad is None else 1.0 for p in group]
            pieces.append(torch.tensor(flags, dtype=dtype, device=group[0].device))
            flat = torch.cat(pieces)
            self._communicate(dist.all_reduce, flat, group=self.group)
            count = sum(p.numel() for p in group)
            grads, had = flat[:count], flat[count:].tolist()
            grads.div_(self.world_size)
            for p, g, h in zip(group, grads.split([p.numel() for p in group]), had, strict=True):
                p.grad = g.view_as(p) if h else None

    def _sync_leaf(self, name: str, leaf: torch.Tensor) -> None:
        """Check that every rank reads ``name`` now, then give it rank 0's value."""
        signature = _signature(f"{name}{tuple(leaf.shape)}{leaf.dtype}")
        self._exchange(_READ, signature, leaf.numel(), lambda: ([name], [leaf]))
        self._communicate(dist.broadcast, leaf.detach(), src=self._src, group=self.group)
        self._param_sync.synced[name] = weakref.ref(leaf)

    def _step_failed(self, error: BaseException) -> None:
        if self._param_sync is None or isinstance(error, DistributedStepError):
            return  # every rank raised it together
        description = f"{type(error).__name__}: {error}"
        try:
            self._exchange(_FAILED, 0, 0, lambda: description, failed=True)
        except DistributedStepError:
            pass  # the others know now (or are gone); this rank raises its own error

    # ---- the exchange ----------------------------------------------------------------------
    def _communicate(self, op: Callable, *args: Any, **kwargs: Any) -> None:
        try:
            op(*args, **kwargs)
        except (RuntimeError, ValueError) as e:
            raise DistributedStepError(
                f"rank {self.rank}: lost contact with the other ranks at step {self._steps} "
                f"({type(e).__name__}: {e}); a rank may have died, or timed out",
            ) from e

    def _exchange(
        self,
        kind: int,
        signature: int,
        numel: int,
        describe: Callable[[], Any],
        failed: bool = False,
    ) -> None:
        """Tell every rank what this one does; raise :class:`DistributedStepError` on every
        rank when one failed or they do not all do the same."""
        rows = torch.zeros(self.world_size, 5, dtype=torch.int64)
        rows[self.rank] = torch.tensor([kind, int(failed), signature, numel, self._steps])
        self._communicate(dist.all_reduce, rows, group=self.group)
        table = rows.tolist()
        if not any(row[_FAILED_FLAG] for row in table) and all(row == table[0] for row in table):
            return
        what = describe()
        if kind != _FAILED:
            names, tensors = what
            what = (names, [tuple(t.shape) for t in tensors])
        everyone: list[Any] = [None] * self.world_size
        self._communicate(dist.all_gather_object, everyone, (kind, what), group=self.group)
        raise self._error(table, everyone)

    def _error(self, table: list[list[int]], everyone: list[Any]) -> DistributedStepError:
        failed = [r for r, row in enumerate(table) if row[_FAILED_FLAG]]
        if failed:
            causes = "; ".join(f"rank {r}: {everyone[r][1]}" for r in failed)
            return DistributedStepError(
                f"rank {', '.join(map(str, failed))} failed at step {table[failed[0]][_COUNT]} "
                f"({causes}); every rank stops",
                failed,
            )
        lines = []
        for r, (row, (kind, (names, shapes))) in enumerate(zip(table, everyone, strict=True)):
            if kind == _READ:
                what = f"reads param '{names[0]}' {shapes[0]} for the first time"
            else:
                what = f"{_DOING[kind]} with params {_describe_params(names, shapes)}"
            lines.append(f"rank {r} at step {row[_COUNT]} {what}")
        first = _first_difference(everyone)
        return DistributedStepError(
            f"the ranks disagree{first}: " + "; ".join(lines) + ". Every rank must run the same "
            "model and guide, reading the same parameters in the same order",
            range(len(table)),
        )

    # ---- checkpoints ----------------------------------------------------------------------
    def _save_checkpoint(self, state: dict, write: Callable[[dict], None]) -> None:
        """Collective: gather every rank's RNG state into ``state``; rank 0 calls
        ``write(state)``; every rank returns once the file is written, or raises."""
        everyone: list[Any] = [None] * self.world_size
        self._communicate(dist.all_gather_object, everyone, state["rng"], group=self.group)
        error = None
        if self.rank == 0:
            try:
                write({**state, "rng_per_rank": everyone})
            except Exception as e:
                error = e
        try:
            if error is None:
                self._exchange(_SAVE, 0, 0, lambda: ([], []))
            else:
                self._exchange(_FAILED, 0, 0, lambda: f"{type(error).__name__}: {error}", True)
        except DistributedStepError:
            if error is not None:
                raise error from None
            raise

    def _rng_state(self, state: dict, path: str) -> dict:
        """This rank's RNG state from a checkpoint's ``state``."""
        per_rank = state.get("rng_per_rank")
        if per_rank is None:
            return state["rng"]  # written by one process: every rank starts from its state
        if len(per_rank) != self.world_size:
            raise ValueError(
                f"checkpoint {path!r} was written by {len(per_rank)} ranks, but this run has "
                f"{self.world_size}: each rank's random number generators cannot be restored "
                "(resume with the same world size, or load without optim= for rank 0's state)"
            )
        return per_rank[self.rank]

    # ---- the wrapped optimizer's state -------------------------------------------------
    def _forget(self, p: torch.Tensor) -> None:
        self.optim._forget(p)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return self.optim.optimizers()

    def get_state(self) -> dict[str, dict]:
        return self.optim.get_state()

    def set_state(self, state: dict[str, dict]) -> None:
        self.optim.set_state(state)

    def save(self, filename: Any) -> None:
        """Rank 0 writes the wrapped optimizer's state (the same on every rank)."""
        if self.rank == 0:
            self.optim.save(filename)

    def load(self, filename: Any, map_location: Any = None) -> None:
        self.optim.load(filename, map_location)


def _first_difference(everyone: list[Any]) -> str:
    """`` on param 'x' (rank 0) vs 'y' (rank 1)``: the first parameter where two ranks'
    lists differ, or nothing."""
    lists = [names for _, (names, _) in everyone]
    for i in range(max(len(n) for n in lists)):
        at = [n[i] if i < len(n) else None for n in lists]
        if any(a != at[0] for a in at):
            pairs = " vs ".join(
                f"{'nothing' if a is None else repr(a)} (rank {r})" for r, a in enumerate(at)
            )
            return f" on param {pairs}"
    return ""
