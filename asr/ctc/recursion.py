"""The forward-backward computation behind :func:`asr.ctc.ctc_loss`: one loop over
frames gives alpha and beta (rescaled probabilities, meeting in the middle; the loop
itself is :mod:`asr.ctc.frames`), and the occupancies that the gradient is made of.
:mod:`asr.ctc` describes the algorithm.

Host synchronisation: everything decided from lengths and targets is decided on the
host, where they are; nothing here reads a device value back (the one decision that
needs device values, which samples to redo in log space, is the caller's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from asr.ctc.frames import GRAPHS, Frames, run_frames

__all__ = ["Problem", "forward_backward", "gradient", "sample_classes", "to_device"]


def to_device(tensors: list[Tensor], device: torch.device) -> list[Tensor]:
    """Host tensors on ``device``, in one copy that does not wait for the device.

    PyTorch's ordinary host-to-device copy synchronises the stream after it: the host
    waits for every kernel queued before, as it does for a read-back. A non-blocking
    copy from pinned memory does not (the caching host allocator keeps the pinned
    block until the copy has run). The tensors travel packed in one buffer
    (:func:`_pack`), so a call costs one copy. Elsewhere than CUDA this is
    ``t.to(device)``.
    """
    if device.type != "cuda":
        return [t.to(device, non_blocking=True) for t in tensors]
    flat = _pack(tensors).pin_memory().to(device, non_blocking=True)
    return _unpack(flat, tensors)


def _pack(tensors: list[Tensor]) -> Tensor:
    """Integer, bool and 8-byte float tensors in one int64 buffer: 8-byte dtypes bit
    for bit, narrower integers and bool converted."""
    packed = []
    for t in tensors:
        assert not (t.is_floating_point() and t.element_size() != 8), t.dtype
        flat = t.reshape(-1)
        packed.append(flat.view(torch.int64) if t.element_size() == 8 else flat.long())
    return torch.cat(packed) if packed else torch.empty(0, dtype=torch.int64)


def _unpack(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    """The tensors of :func:`_pack` back from ``flat`` (views where bits allow)."""
    out = []
    for t, piece in zip(like, flat.split([x.numel() for x in like]), strict=True):
        piece = piece.view(t.shape)
        out.append(piece.view(t.dtype) if t.element_size() == 8 else piece.to(t.dtype))
    return out


@dataclass
class Problem:
    """The stacked forward (rows ``0..B-1``) and reversed (rows ``B..2B-1``) problems.

    Shapes: ``B2 = 2B``; ``S = 2 L_max + 1`` states; ``K`` the most distinct classes
    (blank included) in one sample's target. Each sample reads its emissions from its
    own compact class table (:func:`_emission_table`), so nothing of size ``C`` is
    touched inside the loop. Built on the host (:func:`build_problem`), then moved
    to the device with :meth:`to`.
    """

    classes: Tensor  # (B, K) int64: the sample's classes, sorted, padded with blank
    columns: Tensor  # (B2, S) int64: emission-table column each state reads
    skip: Tensor  # (B2, S) float64: 1 where the s-2 -> s transition is allowed
    meet_index: Tensor  # (B2, S) int64: own state at partner-layout position, S if none
    blank_col: Tensor  # (B,) int64: where the blank is in classes
    # The compact class of each label state (odd state) in the label order of each
    # slot row, which is its partner's (rows < B reversed, rows >= B forward);
    # (B2, L) int64, on the host.
    slot_labels: Tensor

    def to(self, device: torch.device, *extra: Tensor) -> tuple[Problem, list[Tensor]]:
        """This problem on ``device`` and ``extra`` host tensors with it, in one copy
        (:func:`to_device`); ``slot_labels`` stays on the host."""
        names = ("classes", "columns", "skip", "meet_index", "blank_col")
        moved = to_device([getattr(self, n) for n in names] + list(extra), device)
        on_device = dict(zip(names, moved, strict=False))
        return Problem(**on_device, slot_labels=self.slot_labels), moved[len(names) :]


def sample_classes(
    padded: Tensor, tg_lens: Tensor, blank: int, C: int
) -> tuple[Tensor, Tensor]:
    """Each sample's compact class table: its target's classes and the blank, sorted.

    Returns:
        ``classes``: ``(B, K)`` int64, ascending; a row with fewer classes repeats its
        last one (its occupancy there is exactly 0), and ``order``: ``(B, C)`` the
        column of each present class.
    """
    B, L = padded.shape
    in_target = torch.arange(L)[None, :] < tg_lens[:, None]
    present = torch.zeros(B, C, dtype=torch.bool)
    present[:, blank] = True
    present.scatter_(1, torch.where(in_target, padded, blank), True)
    order = torch.cumsum(present, 1) - 1  # (B, C): column of a present class
    K = int(present.sum(1).max()) if B else 1
    count = present.sum(1)  # (B,) at least 1: the blank
    bb, cc = present.nonzero(as_tuple=True)
    classes = torch.zeros(B, K, dtype=torch.int64)
    classes[bb, order[bb, cc]] = cc
    last = classes.gather(1, (count - 1)[:, None])  # (B, 1)
    classes = torch.where(torch.arange(K)[None, :] < count[:, None], classes, last)
    return classes, order


def build_problem(
    padded: Tensor, tg_lens: Tensor, blank: int, table: tuple[Tensor, Tensor]
) -> Problem:
    """The stacked problem, on the host; ``table`` is :func:`sample_classes`'
    output."""
    B, L = padded.shape
    S = 2 * L + 1
    pos = torch.arange(L)
    in_target = pos[None, :] < tg_lens[:, None]
    # Labels reversed within each sample's own length: rev[b, i] = tgt[b, L_b - 1 - i].
    rev_src = (tg_lens[:, None] - 1 - pos[None, :]).clamp(min=0)
    rev = torch.where(in_target, padded.gather(1, rev_src), blank)
    fwd = torch.where(in_target, padded, blank)
    labels = torch.full((2 * B, S), blank, dtype=torch.int64)
    labels[:, 1::2] = torch.cat([fwd, rev], 0)  # (B2, L)
    n_states = (2 * tg_lens + 1).repeat(2)  # (B2,)
    s = torch.arange(S)
    state_ok = s[None, :] < n_states[:, None]
    skip = torch.zeros(2 * B, S, dtype=torch.bool)
    skip[:, 3::2] = labels[:, 3::2] != labels[:, 1:-2:2]  # l'_s != l'_{s-2}, s odd
    skip &= state_ok
    classes, order = table
    K = classes.shape[1]
    compact = order.repeat(2, 1).gather(1, labels)  # (B2, S)
    # Emission columns (see _emission_table): K emits 0 (states past S_b); K+1 is the
    # blank at a real frame and "1" at a padded one, read by the forward rows' last
    # state and the reversed rows' first, so that through padded frames a forward row
    # keeps its mass on its final state and a reversed row waits at its start state.
    columns = torch.where(state_ok, compact, K)
    columns[torch.arange(B), n_states[:B] - 1] = K + 1
    columns[B:, 0] = K + 1
    # Meeting in the partner's layout: the partner's state s_p is this row's state
    # S_b - 1 - s_p (the two label sequences are each other's reversal).
    own = n_states[:, None] - 1 - s[None, :]
    meet_index = torch.where(own >= 0, own, S)
    return Problem(
        classes=classes,
        columns=columns,
        skip=skip.to(torch.float64),
        meet_index=meet_index,
        blank_col=(classes == blank).int().argmax(1),  # the first blank column
        slot_labels=compact.roll(B, 0)[:, 1::2],
    )


_CHUNK = 16  # frames per chunk in the vectorised passes, to bound their temporaries
_CHUNK_BYTES = 1 << 18  # ... or more, while a chunk stays under 256 KiB (CPU)
_LAUNCH_CHUNK_BYTES = 1 << 22  # ... 4 MiB where operations are launch-bound
_NARROW_CHUNK = 4  # narrow slots padded at a time on the CPU


def _launch_bound(device: torch.device) -> bool:
    """Whether an operation on ``device`` costs mostly its launch (a GPU kernel, some
    microseconds whatever its size): there fewer, larger chunks win. On the CPU an
    operation costs its work, and small chunks stay in cache and below the size at
    which an operation is split over threads (which on a loaded machine waits for a
    descheduled thread). (Tests force it on the CPU to count what CUDA would run.)
    """
    return device.type != "cpu"


def _chunk(frame_bytes: int, device: torch.device) -> int:
    """Frames per chunk: at least _CHUNK, more while the chunk stays small."""
    limit = _LAUNCH_CHUNK_BYTES if _launch_bound(device) else _CHUNK_BYTES
    return max(_CHUNK, limit // max(1, frame_bytes))


def _emission_table(
    lp: Tensor,
    classes: Tensor,
    blank_col: Tensor,
    in_lens_d: Tensor,
    min_len: int,
    log_space: bool,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Emissions per frame of each sample's own classes, in the recursion's semiring.

    Args:
        lp: ``(T, B, C)`` log-probabilities (float32 or float64).
        classes: ``(B, K)`` the classes of each sample (blank among them).
        blank_col: ``(B,)`` where the blank is in ``classes``.
        in_lens_d: ``(B,)`` the input lengths, on ``lp``'s device.
        min_len: the shortest input length.
        out: where to write ``E`` (a CUDA graph's input buffer), else a new tensor.

    Returns:
        ``E``: ``(T, B, K + 2)`` in ``lp``'s dtype (``K`` is the number of classes
        in one target, so this is small). In probability space ``exp(lp - m)``, with
        ``m`` the best of the sample's classes at that frame so that they never all
        underflow; in log space ``lp`` itself. Column ``K`` emits 0, column ``K + 1``
        is the blank at a real frame and 1 at a padded one; padded frames emit 0
        elsewhere, so whatever ``lp`` holds there (NaN included) is never used.
        ``m``: ``(T, B)`` the shift per frame, 0 on padded frames.
    """
    T, B, _ = lp.shape
    K = classes.shape[1]
    dev, dt = lp.device, lp.dtype
    one, zero = (0.0, float("-inf")) if log_space else (1.0, 0.0)
    E = torch.empty(T, B, K + 2, dtype=dt, device=dev) if out is None else out
    chunk = _chunk(B * (K + 2) * lp.element_size(), dev)
    m = torch.zeros(T, B, dtype=dt, device=dev)
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        part = E[t0:t1, :B, :K]
        x = lp[t0:t1].gather(2, classes[None].expand(t1 - t0, B, K))  # (n, B, K)
        real = torch.arange(t0, t1, device=dev)[:, None] < in_lens_d[None, :]  # (n, B)
        if log_space:
            part.copy_(x)
        else:
            mc = x.amax(2)
            mc = torch.where(real & torch.isfinite(mc), mc, 0.0)
            m[t0:t1] = mc
            torch.sub(x, mc[:, :, None], out=part).exp_()
        blank_em = part.gather(2, blank_col[None, :, None].expand(t1 - t0, B, 1))
        E[t0:t1, :B, K + 1] = torch.where(real, blank_em[:, :, 0], one)
        if t1 > min_len:
            part.masked_fill_(~real[:, :, None], zero)
        E[t0:t1, :B, K] = zero
    return E, m


def _run_loop(
    lp: Tensor, prob: Problem, in_lens_d: Tensor, min_len: int, log_space: bool
) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
    """The emission table and the frame loop (:mod:`asr.ctc.frames`).

    On CUDA, a padded shape seen before replays a captured graph of the loop on that
    shape's buffers (the rescaled recursion only: the log-space redo is rare and its
    batch varies). Anywhere else the loop runs eagerly on buffers of its own.

    Returns:
        ``(slots, full, c, m)``: the slots (``(B2, w_k)`` views), the full-width ones
        as one ``(n, B2, S)`` view, the normalisers ``(T, B2, 1)`` and the emission
        shifts ``(T, B)``.
    """
    T, B, _ = lp.shape
    B2, S = prob.columns.shape
    Kx = prob.classes.shape[1] + 2
    dev, dt = lp.device, lp.dtype
    key = (str(dev), dt, T, B, S, Kx)
    table_args = (lp, prob.classes, prob.blank_col, in_lens_d, min_len)
    fr = None
    if not log_space:
        fr = GRAPHS.frames(
            key, lambda: Frames.allocate(T, B, S, Kx, dt, dev, False), dev
        )
    if fr is not None:
        _, m = _emission_table(*table_args, False, fr.E)
        fr.load(prob.columns, prob.skip, prob.meet_index)
        GRAPHS.run(key, fr, False)
    else:
        E, m = _emission_table(*table_args, log_space)
        inputs = {
            "E": E,
            "columns": prob.columns,
            "skip": prob.skip,
            "meet_index": prob.meet_index,
        }
        if log_space:
            inputs["log_skip"] = torch.log(prob.skip)  # 0 or -inf
        fr = Frames.allocate(T, B, S, Kx, dt, dev, log_space, inputs)
        run_frames(fr, log_space)
    return fr.slots, fr.full, fr.c, m


def _atomic_free(device: torch.device) -> bool:
    """Whether scatter-adds must avoid atomics to stay deterministic on ``device``.

    The CPU kernels add in index order; CUDA's use floating-point atomics, whose order
    varies from run to run. (Tests force the atomic-free path on the CPU.)
    """
    return device.type != "cpu"


class _ClassFold:
    """Adds the label-state occupancies of chunks of slots onto their compact classes.

    Several label states share a class where a letter repeats. On the CPU one
    ``scatter_add_`` adds them in index order. Elsewhere scatter-adds use
    floating-point atomics, whose order varies from run to run; there the occurrences
    are added rank by rank instead (every class's first occurrence in a row, then its
    second, ...), each rank a gather and an indexed write of distinct positions: the
    same additions in the same order, without atomics. Which position goes where is
    planned once per call, on the host (:meth:`plan`), from the labels.

    Args:
        tensors: on the device, the CPU fold's ``(B2, L)`` slot labels, or the
            atomic-free plan (:meth:`plan`).
        n_max: the most slots in one chunk.
    """

    def __init__(self, tensors: list[Tensor], atomic_free: bool, n_max: int) -> None:
        self.index = None
        self.ranks: list[tuple[Tensor, Tensor]] = []
        if atomic_free:
            self.ranks = list(zip(tensors[0::2], tensors[1::2], strict=True))
        else:
            (labels,) = tensors
            self.index = labels[None].expand(n_max, *labels.shape)

    @staticmethod
    def plan(slot_labels: Tensor, n_labels: Tensor, S: int, K: int) -> list[Tensor]:
        """The atomic-free plan, on the host: per occurrence rank, the flat position of
        each label state in a ``(B2 * S)`` slot and of its class in ``(B2 * K)``.

        Args:
            slot_labels: ``(B2, L)`` compact class of each label state of each slot
                row (:attr:`Problem.slot_labels`).
            n_labels: ``(B2,)`` the real labels of each row.
        """
        R, L = slot_labels.shape
        pos = torch.arange(L)
        real = pos[None, :] < n_labels[:, None]  # (R, L)
        label = torch.where(real, slot_labels, K)  # padding sorts last
        # Occurrence rank of each position: positions sorted by (class, position),
        # minus the start of their class's run.
        order = (label * L + pos[None, :]).argsort(1)
        in_order = label.gather(1, order)
        starts = torch.ones_like(real)
        starts[:, 1:] = in_order[:, 1:] != in_order[:, :-1]
        run_start = torch.where(starts, pos[None, :], 0).cummax(1).values
        rank = torch.empty_like(order).scatter_(1, order, pos[None, :] - run_start)
        n_ranks = int(rank[real].max()) + 1 if bool(real.any()) else 0
        out = []
        for q in range(n_ranks):
            rr, ii = (real & (rank == q)).nonzero(as_tuple=True)
            out.append(rr * S + 2 * ii + 1)  # label state 2i+1 of row rr
            out.append(rr * K + slot_labels[rr, ii])  # its class
        return out

    def __call__(self, g: Tensor, part: Tensor) -> None:
        """Add ``g``'s label states into ``part``.

        Args:
            g: ``(n, B2, S)`` contiguous occupancies of ``n`` slots.
            part: ``(n, B2, K)`` contiguous, 0 at every label class.
        """
        n = g.shape[0]
        if self.index is not None:
            index = self.index if n == self.index.shape[0] else self.index[:n]
            part.scatter_add_(2, index, g[:, :, 1::2])
            return
        flat_g, flat_part = g.view(n, -1), part.view(n, -1)
        for q, (src, dst) in enumerate(self.ranks):
            x = flat_g.index_select(1, src)
            if q:
                x = flat_part.index_select(1, dst).add_(x)
            flat_part.index_copy_(1, dst, x)


def _pad_slots(slots: list[Tensor], scratch: Tensor, empty: float) -> Tensor:
    """Narrow slots ``(B2, w)`` copied into ``scratch`` padded to full width ``S``
    with ``empty`` (states past a slot's width were unreachable): ``(n, B2, S)``."""
    g = scratch[: len(slots)]
    g.fill_(empty)
    B2, S = g.shape[1:]
    base = g.storage_offset()
    for i, slot in enumerate(slots):
        g.as_strided(slot.shape, (S, 1), base + i * B2 * S).copy_(slot)
    return g


def forward_backward(
    lp: Tensor,
    padded: Tensor,
    in_lens: Tensor,
    tg_lens: Tensor,
    blank: int,
    log_space: bool,
    need_grad: bool,
    table: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Loss, class occupancies and an exactness flag for each sample.

    Args:
        lp: ``(T, B, C)`` log-probabilities in the compute dtype.
        padded, in_lens, tg_lens: host tensors (``(B, L)``, ``(B,)``, ``(B,)``).
    Returns:
        ``(nll (B,), occ (T, B, K) or None, ok (B,) bool)``: ``occ`` over the compact
        classes of :func:`sample_classes`; ``ok`` is False where the rescaled
        recursion could not be trusted (always True in log space).
    """
    T, B, C = lp.shape
    dev, dt = lp.device, lp.dtype
    min_len = int(in_lens.min())
    if table is None:
        table = sample_classes(padded, tg_lens, blank, C)
    K = table[0].shape[1]
    prob = build_problem(padded, tg_lens, blank, table)
    B2, S = prob.columns.shape
    atomic_free = _atomic_free(dev)
    fold_host = []
    if need_grad:
        n_labels = tg_lens.repeat(2)
        fold_host = (
            _ClassFold.plan(prob.slot_labels, n_labels, S, K)
            if atomic_free
            else [prob.slot_labels]
        )
    # Everything decided on the host goes to the device in one copy.
    prob, (in_lens_d, tg_lens_d, *fold_d) = prob.to(dev, in_lens, tg_lens, *fold_host)
    slots, full, c, m = _run_loop(lp, prob, in_lens_d, min_len, log_space)
    logc = c.squeeze(2).log_()  # (T, B2)
    half, lower = (T + 1) // 2, T // 2
    # The frame each (slot j, row r) describes: row r < B frame T-1-j, else frame j.
    j = torch.arange(half, device=dev)
    t_of = torch.cat(
        [(T - 1 - j)[:, None].expand(half, B), j[:, None].expand(half, B)], 1
    )
    # Rows < B of the middle slot (odd T) duplicate rows >= B: use one of them.
    use = t_of < in_lens_d.repeat(2)[None, :]
    use[:, :B] &= (j < lower)[:, None]
    # Every frame's occupancy is written exactly once below (frame t < ceil(T/2) by
    # rows >= B of slot t, the others by rows < B of slot T-1-t).
    occ = torch.empty(T, B, K, dtype=dt, device=dev) if need_grad else None
    log_d = torch.empty(half, B2, dtype=torch.float64, device=dev)
    chunk = _chunk(B2 * K * 8, dev)  # the float64 class fold of one slot
    n_max = min(chunk, half)
    empty = float("-inf") if log_space else 0.0
    if need_grad:
        part_buf = torch.empty(n_max, B2, K, dtype=torch.float64, device=dev)
        blank_index = prob.blank_col.repeat(2)[None, :, None].expand(n_max, B2, 1)
        fold = _ClassFold(fold_d, atomic_free, n_max)
        unused = None  # (~use)[:, :, None], made where a chunk needs it

    def occupancy(j0: int, j1: int, g: Tensor) -> None:
        """Slots ``j0..j1-1`` as ``g`` ``(n, B2, S)`` float64 (ours to change):
        their log-normalisers, and their occupancies folded onto classes."""
        nonlocal unused
        if log_space:
            mx = g.amax(2)
            g.sub_(mx[:, :, None]).exp_()
            d = g.sum(2)
            log_d[j0:j1] = mx + d.log()
        else:
            d = g.sum(2)
            torch.log(d, out=log_d[j0:j1])
        if occ is None:
            return
        # Occupancy gamma = G / D, zero off real frames, folded onto compact classes.
        g.div_(d[:, :, None])  # gamma
        # Rows < B describe frames T-1-j, rows >= B frames j: all real unless a frame
        # lies past the shortest input (decided on the host, no device sync).
        if T - 1 - j0 >= min_len or (T % 2 and j1 > lower):
            if unused is None:
                unused = (~use)[:, :, None]
            g.masked_fill_(unused[j0:j1], 0.0)
        n = j1 - j0
        part = part_buf if n == n_max else part_buf[:n]
        part.zero_()
        index = blank_index if n == n_max else blank_index[:n]
        part.scatter_(2, index, g[:, :, 0::2].sum(2, keepdim=True))
        fold(g, part)
        occ[j0:j1] = part[:, B:]  # rows >= B: frame j
        f1 = min(j1, lower)
        if j0 < f1:  # rows < B: frame T-1-j
            occ[T - f1 : T - j0] = part[: f1 - j0, :B].flip(0)

    # Full-width slots first: they are views. Then the narrow (banded) ones, padded
    # to full width in the space of full-width slots already done (no extra memory),
    # or in a small buffer where no slot is full width.
    n_full = full.shape[0]
    n_narrow = half - n_full
    for j0 in range(n_narrow, half, chunk):
        j1 = min(half, j0 + chunk)
        occupancy(j0, j1, full[j0 - n_narrow : j1 - n_narrow])
    if n_narrow:
        step = chunk if _launch_bound(dev) else _NARROW_CHUNK
        if n_full:
            scratch, step = full, min(step, n_full)
        else:
            step = min(_NARROW_CHUNK, n_narrow)
            scratch = torch.empty(step, B2, S, dtype=torch.float64, device=dev)
        for j0 in range(0, n_narrow, step):
            j1 = min(n_narrow, j0 + step)
            occupancy(j0, j1, _pad_slots(slots[j0:j1], scratch, empty))
        del scratch
    del slots, full  # the storage goes before the gradient arrives
    if need_grad:
        del part_buf, fold

    if log_space:
        est = log_d
    else:
        # Scale of the stored state (partner, step j) and of this row's pre-emission
        # value (step k-1 = T-2-j): Lam[k] = sum_{k' <= k} log c + m.
        m2 = torch.cat([m, m.flip(0)], 1)  # (T, B2): reversed rows read frame T-1-k
        Lam = torch.cumsum(logc + m2, 0)  # (T, B2) float64
        Lam = torch.cat([Lam.new_zeros(1, B2), Lam], 0)  # Lam[k + 1], Lam[0] = 0
        partner_lam = Lam[1 : half + 1].roll(B, 1)  # Lam_partner[j]
        own_lam = Lam[T - 1 - j]  # Lam_own[T-2-j]
        est = log_d + partner_lam + own_lam  # (half, B2): log P seen from frame t
    # log P seen from frame 0 (rows >= B of slot 0) is the loss; every other frame must
    # agree with it, which is the check that the rescaled recursion kept all its mass.
    logP = est[0, B:]
    nll = (-logP).to(dt)
    if log_space:
        ok = torch.ones(B, dtype=torch.bool, device=dev)
    else:
        off = torch.where(use, (est - logP.repeat(2)[None, :]).abs(), 0.0)
        worst = torch.maximum(off[:, :B].amax(0), off[:, B:].amax(0))
        # Rounding grows with the number of emissions multiplied (they carry lp's
        # rounding) and states summed; mass lost to underflow shows up far above.
        tol = 8 * torch.finfo(dt).eps * (1.0 + in_lens_d + S)
        ok = torch.isfinite(logP) & (worst <= tol)
    # No frames: P = 1 for an empty target, else 0 (the loop above read nothing real).
    no_frames = in_lens_d == 0
    empty_target = tg_lens_d == 0
    nll = torch.where(no_frames, torch.where(empty_target, 0.0, float("inf")), nll)
    ok = ok | no_frames
    return nll, occ, ok


def gradient(
    lp: Tensor,
    occ: Tensor,
    classes: Tensor,
    in_lens: Tensor,
    weight: Tensor,
    dead: Tensor | None,
    zero_infinity: bool,
) -> Tensor:
    """Torch's convention: ``weight_b * (exp(lp) - occupancy)`` on real frames, else 0.

    Args:
        lp: ``(T, B, C)`` log-probabilities in the compute dtype.
        occ: ``(T, B, K)`` occupancy of each sample's compact classes.
        classes: ``(B, K)`` host, the class of each compact column, from
            :func:`sample_classes`.
        in_lens: ``(B,)`` host.
        weight: ``(B,)`` upstream gradient of each sample's loss.
        dead: ``(B,)`` on ``lp``'s device, samples whose loss is infinite: 0 with
            ``zero_infinity``,
            otherwise NaN on their real frames, as torch gives; None where the host
            knows there are none.
    """
    T, B, _ = lp.shape
    K = classes.shape[1]
    dev = lp.device
    grad = torch.exp(lp)
    atomic_free = _atomic_free(dev)
    if atomic_free:
        # Each (sample, class) pair that carries occupancy is a distinct (b, c): a
        # plain indexed write, no floating-point atomics. Planned on the host.
        first = torch.ones_like(classes, dtype=torch.bool)
        first[:, 1:] = classes[:, 1:] != classes[:, :-1]  # ascending, padding repeats
        bb, ii = first.nonzero(as_tuple=True)
        plan = [bb, ii, classes[bb, ii]]
    else:
        plan = [classes]
    in_lens_d, *plan = to_device([in_lens, *plan], dev)
    if not atomic_free:
        # The CPU scatter adds in index order: deterministic.
        grad.scatter_add_(2, plan[0][None].expand(T, B, K), -occ)
    else:
        bb, ii, cc = plan
        step = _chunk(bb.numel() * occ.element_size(), dev)
        for t0 in range(0, T, step):
            t1 = min(T, t0 + step)
            g = grad[t0:t1]
            g[:, bb, cc] -= occ[t0:t1, bb, ii]
    grad.mul_(weight.to(grad.dtype)[None, :, None])
    if dead is not None:
        fill = 0.0 if zero_infinity else float("nan")
        grad.masked_fill_(dead[None, :, None], fill)
    if int(in_lens.min()) < T:
        frame_ok = torch.arange(T, device=dev)[:, None] < in_lens_d[None, :]
        grad.masked_fill_(~frame_ok[:, :, None], 0.0)
    return grad
