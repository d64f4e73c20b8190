"""The loop over frames inside :func:`asr.ctc.recursion.forward_backward`: the buffers
it reads and writes, one step of it, and the CUDA graphs that replay the whole loop.

The loop is ``T`` steps of a few small tensor operations each. On a GPU each one is a
kernel launch of a few microseconds, so the loop costs ``T`` times the launches
whatever the batch; a CUDA graph records the launches of one loop and replays them
with a single call. A graph replays fixed memory addresses and fixed sizes, so every
tensor the loop touches lives in a :class:`Frames` object allocated once per padded
shape, and the step function is written against those buffers only: the eager loop
and the captured one are the same code on the same kind of object.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["GRAPHS", "Frames", "LoopGraphs", "run_frames"]

_RESCALE_EVERY = 4  # steps between rescalings of the probability-space recursion


def slot_widths(T: int, S: int) -> list[int]:
    """States kept per stored step: after ``k + 1`` steps a recursion can only have
    reached states ``s <= 2k + 1``, so slot ``k`` keeps ``min(S, 2k + 2)``."""
    return [min(S, 2 * k + 2) for k in range((T + 1) // 2)]


@dataclass(eq=False)
class Frames:
    """Every tensor the frame loop touches, for one padded shape.

    Shapes: ``T`` frames, ``B2 = 2B`` rows (forward problems, then reversed ones),
    ``S`` states, ``Kx = K + 2`` emission-table columns.

    Inputs (read by the loop; :meth:`load` fills them in place for a replay):
        E: ``(T, B, Kx)`` emission table (see ``recursion._emission_table``).
        columns: ``(B2, S)`` int64 emission-table column of each state.
        skip: ``(B2, S)`` float64, 1 where the ``s-2 -> s`` transition is allowed.
        log_skip: ``log(skip)`` (0 or -inf), read in log space only.
        meet_index: ``(B2, S)`` int64 own state at each partner-layout position.

    Outputs (written by every run, whatever they held before):
        storage: the slots, ``ceil(T/2)`` blocks ``(B2, w_k)`` one after the other
            (:func:`slot_widths`), each in the label order of its partner row.
        c: ``(T, B2, 1)`` float64 normaliser of each step (1 where none).

    The rest is work space and constants: the state ``A`` ``(B2, S + 2)`` (two zero
    columns before state 0 give the shifted copies), the pre-emission values
    ``pre_buf`` ``(B2, S + 1)`` (column ``S`` reads "none"), the step's emissions
    ``y``, the two frame rows read per step, and the row swap between partners.
    """

    E: Tensor
    columns: Tensor
    skip: Tensor
    log_skip: Tensor | None
    meet_index: Tensor
    storage: Tensor
    c: Tensor
    A: Tensor
    pre_buf: Tensor
    tmp: Tensor
    y: Tensor
    rows: Tensor
    frames: Tensor
    swap: Tensor
    # Views made once (a view is an operation too; the loop only uses them).
    cur: Tensor = field(init=False)  # A's states (B2, S)
    prev1: Tensor = field(init=False)  # ... shifted by one state
    prev2: Tensor = field(init=False)  # ... shifted by two
    pre: Tensor = field(init=False)  # pre_buf's states (B2, S)
    rows2: Tensor = field(init=False)  # rows as (B2, Kx)
    slots: list[Tensor] = field(init=False)  # (B2, w_k) views of storage
    full: Tensor = field(init=False)  # the full-width slots, (n, B2, S)
    step_frames: tuple[Tensor, ...] = field(init=False)
    c_rows: tuple[Tensor, ...] = field(init=False)
    graph: Callable[[], None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        B2, S = self.columns.shape
        A = self.A
        self.cur, self.prev1, self.prev2 = A[:, 2:], A[:, 1:-1], A[:, :-2]
        self.pre = self.pre_buf[:, :S]
        self.rows2 = self.rows.view(B2, -1)
        widths = slot_widths(self.E.shape[0], S)
        # Narrow slots each need a view of their own; the full-width ones that follow
        # are one (n, B2, S) block, unbound in one operation.
        narrow = [w for w in widths if w < S]
        offset = B2 * sum(narrow)
        parts = self.storage[:offset].split([B2 * w for w in narrow])
        self.slots = [x.view(B2, w) for x, w in zip(parts, narrow, strict=True)]
        self.full = self.storage[offset:].view(len(widths) - len(narrow), B2, S)
        self.slots += self.full.unbind(0)
        self.step_frames = self.frames.unbind(0)
        self.c_rows = self.c.unbind(0)

    @classmethod
    def allocate(
        cls,
        T: int,
        B: int,
        S: int,
        Kx: int,
        dtype: torch.dtype,
        device: torch.device,
        log_space: bool,
        inputs: dict[str, Tensor] | None = None,
    ) -> Frames:
        """Buffers for one padded shape; ``inputs`` (the problem's own tensors) are
        used in place instead of allocated, for a run that is not replayed."""
        B2, f64 = 2 * B, torch.float64
        inputs = inputs or {}

        def new(name: str, shape: tuple[int, ...], dt: torch.dtype) -> Tensor:
            if name in inputs:
                return inputs[name]
            return torch.empty(shape, dtype=dt, device=device)

        ks = torch.arange(T, device=device)
        widths = slot_widths(T, S)
        return cls(
            E=new("E", (T, B, Kx), dtype),
            columns=new("columns", (B2, S), torch.int64),
            skip=new("skip", (B2, S), f64),
            log_skip=new("log_skip", (B2, S), f64) if log_space else None,
            meet_index=new("meet_index", (B2, S), torch.int64),
            storage=torch.empty(B2 * sum(widths), dtype=f64, device=device),
            c=torch.empty(T, B2, 1, dtype=f64, device=device),
            A=torch.empty(B2, S + 2, dtype=f64, device=device),
            pre_buf=torch.empty(B2, S + 1, dtype=f64, device=device),
            tmp=torch.empty(B2, S, dtype=f64, device=device),
            y=torch.empty(B2, S, dtype=dtype, device=device),
            rows=torch.empty(2, B, Kx, dtype=dtype, device=device),
            frames=torch.stack([ks, T - 1 - ks], 1),  # step k: frames k and T-1-k
            swap=torch.arange(B2, device=device).roll(B),
        )

    def load(self, columns: Tensor, skip: Tensor, meet_index: Tensor) -> None:
        """Copy a problem into the input buffers (``E`` is written in place by its
        producer)."""
        self.columns.copy_(columns)
        self.skip.copy_(skip)
        self.meet_index.copy_(meet_index)
        if self.log_skip is not None:
            torch.log(skip, out=self.log_skip)

    @property
    def nbytes(self) -> int:
        tensors = (self.E, self.columns, self.skip, self.log_skip, self.meet_index)
        tensors += (self.storage, self.c, self.A, self.pre_buf, self.tmp, self.y)
        tensors += (self.rows, self.frames, self.swap)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def run_frames(fr: Frames, log_space: bool) -> None:
    """Run the forward and reversed recursions together, meeting in the middle.

    During the first ``ceil(T/2)`` steps each step's reachable states are stored, rows
    swapped with their partner; during the rest each row multiplies the stored
    partner state of the same frame by its own pre-emission value, which leaves
    ``alpha beta / y`` (rescaled; its log in log space) in the slot. Every buffer the
    loop reads is either an input or written here first, so a rerun on the same
    buffers (a graph replay) depends on the inputs alone.
    """
    T = fr.E.shape[0]
    S = fr.columns.shape[1]
    zero, one = (float("-inf"), 0.0) if log_space else (0.0, 1.0)
    fr.A.fill_(zero)
    fr.A[:, 2].fill_(one)  # "before frame 0": all mass on state 0
    fr.pre_buf[:, S].fill_(zero)
    fr.c.fill_(1.0)
    for k in range(T):
        frame_step(fr, k, log_space)


def frame_step(fr: Frames, k: int, log_space: bool) -> None:
    """Step ``k``: frame ``k`` for the forward rows, ``T-1-k`` for the reversed ones.

    The recursion state and the stored states are float64 whatever ``E``'s dtype:
    within one frame the forward variables of far-apart states span hundreds of nats
    (float32 ends at e^-87), and the product of a stored state with its partner's must
    not underflow where the occupancy is large.
    """
    T = fr.E.shape[0]
    S = fr.columns.shape[1]
    half = (T + 1) // 2
    cur, prev1, prev2, pre, y = fr.cur, fr.prev1, fr.prev2, fr.pre, fr.y
    torch.index_select(fr.E, 0, fr.step_frames[k], out=fr.rows)  # (2, B, Kx)
    torch.gather(fr.rows2, 1, fr.columns, out=y)  # (B2, S)
    if log_space:
        tmp = fr.tmp
        torch.logaddexp(cur, prev1, out=pre)
        torch.add(prev2, fr.log_skip, out=tmp)
        torch.logaddexp(pre, tmp, out=pre)
        torch.add(pre, y, out=cur)
    else:
        torch.add(cur, prev1, out=pre)
        pre.addcmul_(prev2, fr.skip)
        torch.mul(pre, y, out=cur)
        if k % _RESCALE_EVERY == _RESCALE_EVERY - 1 or k == half - 1:
            # Rescaling every few steps keeps the state far inside float64's range (a
            # step shrinks it by the sample's emission probabilities, never grows it
            # more than 3x); a shrink that does underflow is caught by the check
            # afterwards. Slot half-1 is the largest ever stored.
            ck = fr.c_rows[k]
            torch.sum(cur, 1, keepdim=True, out=ck)
            cur.div_(ck)
    if k < half:
        # Keep this step's reachable states for the partner row to meet later.
        slot = fr.slots[k]
        w = slot.shape[1]
        torch.index_select(cur if w == S else cur[:, :w], 0, fr.swap, out=slot)
        if k == T - 1 - k:  # odd T: both directions are at the middle frame now
            _meet(fr, slot, log_space)
    else:
        _meet(fr, fr.slots[T - 1 - k], log_space)


def _meet(fr: Frames, slot: Tensor, log_space: bool) -> None:
    """Combine a stored partner state (``(B2, w)``, in the partner's label order)
    with this step's pre-emission values, in place."""
    own = fr.tmp
    torch.gather(fr.pre_buf, 1, fr.meet_index, out=own)
    w = slot.shape[1]
    if w < own.shape[1]:
        own = own[:, :w]
    if log_space:
        slot.add_(own)
    else:
        slot.mul_(own)


# --------------------------------------------------------------------------------------
# CUDA graphs: one captured loop per padded shape that repeats.

_Key = tuple


def _capture(fr: Frames, log_space: bool) -> Callable[[], None]:
    """Capture the loop on ``fr`` into a CUDA graph and return its replay.

    As torch's notes on CUDA graphs prescribe: a warm-up run on a side stream first
    (lazy initialisation, such as loading a kernel on its first launch, must not
    happen during capture; one run launches every kernel the capture will record),
    then the capture on that same stream. ``thread_local`` capture lets other
    threads use CUDA meanwhile (the data loader's pin-memory thread allocates pinned
    memory, which the default ``global`` mode turns into a failed capture). Autocast
    is off: the loop's float64 operations do not autocast, and its cache must not
    leak into the graph.
    """
    device = fr.E.device
    stream = torch.cuda.Stream(device=device)
    current = torch.cuda.current_stream(device)
    stream.wait_stream(current)
    graph = torch.cuda.CUDAGraph()
    with torch.autocast(device_type="cuda", enabled=False), torch.cuda.device(device):
        with torch.cuda.stream(stream):
            run_frames(fr, log_space)
        current.wait_stream(stream)
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            run_frames(fr, log_space)
    return graph.replay


def _graphable(device: torch.device) -> bool:
    """Whether the loop may be captured on ``device`` now (not inside someone else's
    capture, where our eager operations are being recorded)."""
    return device.type == "cuda" and not torch.cuda.is_current_stream_capturing()


class LoopGraphs:
    """Captured frame loops, kept per padded shape, least recently used evicted.

    A shape is captured the second time it is seen (a capture costs a warm-up run
    and a device synchronisation, and holds the shape's buffers for as long as the
    graph is kept), so one-off shapes run eagerly and cost nothing here. At most
    ``capacity`` graphs and ``max_bytes`` of their buffers are kept. A shape whose
    capture fails runs eagerly from then on.
    """

    def __init__(self, capacity: int = 4, max_bytes: int = 2 << 30) -> None:
        self.enabled = True
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._graphs: OrderedDict[_Key, Frames] = OrderedDict()
        self._seen: OrderedDict[_Key, None] = OrderedDict()
        self._failed: set[_Key] = set()

    def __len__(self) -> int:
        return len(self._graphs)

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept graphs' buffers."""
        return sum(fr.nbytes for fr in self._graphs.values())

    def clear(self) -> None:
        self._graphs.clear()
        self._seen.clear()
        self._failed.clear()

    def frames(
        self, key: _Key, allocate: Callable[[], Frames], device: torch.device
    ) -> Frames | None:
        """The static buffers of ``key``'s graph (to load and :meth:`run`), or None
        where the loop should run eagerly on buffers of its own."""
        if not (self.enabled and _graphable(device)) or key in self._failed:
            return None
        if key in self._graphs:
            self._graphs.move_to_end(key)
            return self._graphs[key]
        if key not in self._seen:
            self._seen[key] = None
            while len(self._seen) > 4 * self.capacity:
                self._seen.popitem(last=False)
            return None
        del self._seen[key]
        fr = allocate()
        if fr.nbytes > self.max_bytes:
            self._failed.add(key)
            return None
        self._graphs[key] = fr
        while len(self._graphs) > self.capacity or self.nbytes > self.max_bytes:
            self._graphs.popitem(last=False)
        return fr

    def run(self, key: _Key, fr: Frames, log_space: bool) -> None:
        """Replay ``fr``'s graph, capturing it first if it has none."""
        if fr.graph is None:
            try:
                fr.graph = _capture(fr, log_space)
            except RuntimeError as error:  # a capture the device or driver refuses
                warnings.warn(
                    f"CTC loss: capturing the frame loop as a CUDA graph failed "
                    f"({error}); this shape runs eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._graphs.pop(key, None)
                self._failed.add(key)
                run_frames(fr, log_space)
                return
        fr.graph()


# The process's graphs (one training process uses one device). `GRAPHS.enabled =
# False` turns them off (tools/bench_ctc.py --cuda-graph off).
GRAPHS = LoopGraphs()
