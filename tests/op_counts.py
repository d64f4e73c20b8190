"""Count, on the CPU, what a computation would cost on a GPU: the aten operations it
executes (each one at least a kernel launch there) and its host synchronizations
(each one a stall: the host waits for the device to finish everything queued).

A CPU run has no device, so the counter decides which tensors *would* live on it by
following data flow at the Python level (a ``TorchFunctionMode``):

- **device tensors** are the ones the caller marks (the inputs, e.g. ``log_probs``),
  those created with an explicit ``torch.device`` (``torch.empty(..., device=dev)``,
  ``x.to(dev)``, ``x.new_zeros(...)`` of a device tensor) and every result of a call
  that reads a device tensor;
- **host tensors** are all others: created without a device or with the *string*
  ``"cpu"`` (``x.to("cpu")``, ``x.cpu()``), and computed from host tensors only.

The code under test follows that convention: it names the accelerator with
``torch.device`` objects (``lp.device``) and the host with ``"cpu"``.

A **host synchronization** is then any of these applied to a device tensor:

- reading values on the host: ``item()``, ``tolist()``, ``numpy()``, ``bool()``,
  ``int()``, ``float()``, ``__index__`` (what ``if t.any():`` or ``range(t.max())``
  do), or copying to the host (``cpu()``, ``to("cpu")``, ``copy_`` into a host tensor);
- an operation whose result's *shape* depends on the device tensor's values, which
  CUDA must read back before it can allocate the result: ``nonzero``, ``argwhere``,
  ``masked_select``, ``unique``, one-argument ``where``, ``repeat_interleave`` without
  ``output_size``, indexing or index-assignment with a boolean device mask.

and, in the other direction, a copy from the host that is not ``non_blocking``
(``x.to(dev)``, ``torch.tensor(data, device=dev)``, ``dst.copy_(host)``, a device
tensor indexed with a host index tensor): PyTorch follows such a copy with a
``cudaStreamSynchronize``, so the host waits for every kernel queued before, exactly as
for a read-back. (A ``non_blocking`` copy is only free of that wait from pinned
memory; the code under test pins on CUDA, which the CPU cannot check.)

Operations (at the aten level, a ``TorchDispatchMode``) are counted whatever the
device, views included. The counter's own bookkeeping is not counted.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["Counts", "count"]

# Host reads of a value (the method names as __torch_function__ sees them).
_READS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"}
# Results whose shape depends on the values of their (first) tensor argument.
_VALUE_SHAPED = {
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "_unique",
    "_unique2",
    "bincount",
    "nonzero_static",
}
_UPLOADS = {"to", "cuda", "tensor", "as_tensor", "asarray"}  # copies from the host
_FACTORIES_AND_MOVES = {"to", "cuda", "cpu", "new_empty", "new_zeros", "new_ones"}


@dataclass
class Counts:
    """What one counted run executed."""

    ops: int = 0  # aten operations
    syncs: int = 0  # host synchronizations (see the module docstring)
    sync_sites: Counter = field(default_factory=Counter)  # name -> times
    op_names: Counter = field(default_factory=Counter)  # aten op -> times


def _tensors(tree: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(tree)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


class _Ops(TorchDispatchMode):
    def __init__(self, counts: Counts) -> None:
        super().__init__()
        self.counts = counts
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused:
            self.counts.ops += 1
            self.counts.op_names[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


class _Flow(TorchFunctionMode):
    """Device/host data flow at the Python level, and the synchronizations."""

    def __init__(self, counts: Counts, ops: _Ops) -> None:
        super().__init__()
        self.counts = counts
        self.ops = ops
        # id -> weak reference (a WeakSet would compare tensors with ==).
        self.device: dict[int, weakref.ref] = {}

    def mark(self, tensors: Iterable[torch.Tensor]) -> None:
        for t in tensors:
            self.device[id(t)] = weakref.ref(t)

    def on_device(self, t: Any) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        ref = self.device.get(id(t))
        return ref is not None and ref() is t

    def _alias(self, t: torch.Tensor) -> torch.Tensor:
        self.ops.paused = True
        try:
            return t.view_as(t)
        finally:
            self.ops.paused = False

    def _sync(self, name: str) -> None:
        self.counts.syncs += 1
        self.counts.sync_sites[name] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        inputs = _tensors((args, kwargs))
        from_device = any(self.on_device(t) for t in inputs)
        first = args[0] if args else None
        # Device -> host.
        if name in _READS and self.on_device(first):
            self._sync(name)
        elif name in _VALUE_SHAPED and self.on_device(first):
            self._sync(name)
        elif name == "where" and len(args) + len(kwargs) == 1 and from_device:
            self._sync("where(cond)")
        elif (
            name == "repeat_interleave"
            and "output_size" not in kwargs
            and any(self.on_device(a) for a in args[1:2])
        ):
            self._sync(name)
        elif name in ("__getitem__", "__setitem__", "index_put_", "index_put"):
            index = _tensors(args[1:2])
            if any(i.dtype == torch.bool and self.on_device(i) for i in index):
                self._sync(f"{name}[bool mask]")
        elif name == "copy_" and from_device and not self.on_device(first):
            self._sync("copy_ to host")
        elif name == "copy_" and self.on_device(first) and not self.on_device(args[1]):
            if not kwargs.get("non_blocking", args[2] if len(args) > 2 else False):
                self._sync("copy_ from host")
        if name in ("__getitem__", "__setitem__") and self.on_device(first):
            index = _tensors(args[1:2])
            if any(i.dim() and not self.on_device(i) for i in index):
                self._sync(f"{name}[host index]")
        to_host = name == "cpu" or (
            name == "to" and any(a == "cpu" for a in (*args[1:], kwargs.get("device")))
        )
        if to_host and self.on_device(first):
            self._sync(name)
        explicit = any(
            isinstance(a, torch.device) for a in (*args, *kwargs.values())
        ) and (name in _FACTORIES_AND_MOVES or "device" in kwargs)
        blocking = not kwargs.get("non_blocking", False)
        if explicit and not from_device and blocking and name in _UPLOADS:
            self._sync(f"{name} from host")
        out = func(*args, **kwargs)
        # Which results live on the device.
        if to_host:
            # On the CPU x.cpu() returns x itself: the host copy must be a distinct
            # tensor (an alias), or it would still count as the device one.
            return self._alias(out) if out is first else out
        if from_device or explicit or name == "cuda":
            results = _tensors(out)
            if explicit and not from_device and any(r is first for r in results):
                # Likewise x.to(dev) of a host tensor, so the host one stays host.
                out = self._alias(out)
                results = [out]
            self.mark(results)
        return out


def count(
    fn: Callable[..., Any], device_inputs: Iterable[torch.Tensor], *args, **kwargs
) -> tuple[Any, Counts]:
    """Run ``fn(*args, **kwargs)`` counting its operations and synchronizations.

    ``device_inputs`` are the tensors that would be on the device (e.g. log_probs).
    Gradients requested inside ``fn`` must come from :func:`grad`, which keeps the
    counting active in the backward pass.
    """
    counts = Counts()
    ops = _Ops(counts)
    flow = _Flow(counts, ops)
    flow.mark(device_inputs)
    with flow, ops:
        result = fn(*args, **kwargs)
    return result, counts


def grad(output: torch.Tensor, inputs: tuple[torch.Tensor, ...]):
    """``torch.autograd.grad(output.sum(), inputs)`` without leaving the counting
    modes: ``torch.autograd.grad`` is itself intercepted by ``__torch_function__``,
    and its backward would run with the function mode suspended."""
    total = output.sum()
    return torch.autograd.graph._engine_run_backward(
        (total,), (torch.ones_like(total),), False, False, inputs, False, False
    )
