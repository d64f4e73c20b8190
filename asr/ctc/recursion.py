"""The forward-backward computation behind :func:`asr.ctc.ctc_loss`: one loop over
frames gives alpha and beta (rescaled probabilities, meeting in the middle), and the
occupancies that the gradient is made of. :mod:`asr.ctc` describes the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Problem", "forward_backward", "gradient", "sample_classes"]


@dataclass
class Problem:
    """The stacked forward (rows ``0..B-1``) and reversed (rows ``B..2B-1``) problems.

    Shapes: ``B2 = 2B``; ``S = 2 L_max + 1`` states; ``K`` the most distinct classes
    (blank included) in one sample's target. Each sample reads its emissions from its
    own compact class table (:func:`_emission_table`), so nothing of size ``C`` is
    touched inside the loop.
    """

    classes: Tensor  # (B, K) int64: the sample's classes, sorted, padded with blank
    compact: Tensor  # (B2, S) int64: compact class index of each state
    columns: Tensor  # (B2, S) int64: emission-table column each state reads
    skip: Tensor  # (B2, S) float64: 1 where the s-2 -> s transition is allowed
    meet_index: Tensor  # (B2, S) int64: own state at partner-layout position, S if none


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
    padded: Tensor,
    tg_lens: Tensor,
    blank: int,
    table: tuple[Tensor, Tensor],
    device: torch.device,
) -> Problem:
    """The stacked problem; ``table`` is :func:`sample_classes`' output."""
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
        classes=classes.to(device),
        compact=compact.to(device),
        columns=columns.to(device),
        skip=skip.to(device=device, dtype=torch.float64),
        meet_index=meet_index.to(device),
    )


_CHUNK = 16  # frames per chunk in the vectorised passes, to bound their temporaries
_CHUNK_BYTES = 1 << 18  # ... or more, while a chunk stays under 256 KiB


def _chunk(frame_bytes: int) -> int:
    """Frames per chunk: at least _CHUNK, more while the chunk stays small."""
    return max(_CHUNK, _CHUNK_BYTES // max(1, frame_bytes))


_RESCALE_EVERY = 4  # steps between rescalings of the probability-space recursion


def _emission_table(
    lp: Tensor, classes: Tensor, blank_col: Tensor, in_lens: Tensor, log_space: bool
) -> tuple[Tensor, Tensor]:
    """Emissions per frame of each sample's own classes, in the recursion's semiring.

    Args:
        lp: ``(T, B, C)`` log-probabilities (float32 or float64).
        classes: ``(B, K)`` the classes of each sample (blank among them).
        blank_col: ``(B,)`` where the blank is in ``classes``.

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
    min_len = int(in_lens.min())
    one, zero = (0.0, float("-inf")) if log_space else (1.0, 0.0)
    E = torch.empty(T, B, K + 2, dtype=dt, device=dev)
    chunk = _chunk(B * (K + 2) * lp.element_size())
    m = torch.zeros(T, B, dtype=dt, device=dev)
    in_lens_d = in_lens.to(dev)
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        out = E[t0:t1, :B, :K]
        x = lp[t0:t1].gather(2, classes[None].expand(t1 - t0, B, K))  # (n, B, K)
        real = torch.arange(t0, t1, device=dev)[:, None] < in_lens_d[None, :]  # (n, B)
        if log_space:
            out.copy_(x)
        else:
            mc = x.amax(2)
            mc = torch.where(real & torch.isfinite(mc), mc, 0.0)
            m[t0:t1] = mc
            torch.sub(x, mc[:, :, None], out=out).exp_()
        blank_em = out.gather(2, blank_col[None, :, None].expand(t1 - t0, B, 1))
        E[t0:t1, :B, K + 1] = torch.where(real, blank_em[:, :, 0], one)
        if t1 > min_len:
            out.masked_fill_(~real[:, :, None], zero)
        E[t0:t1, :B, K] = zero
    return E, m


def _joint_loop(
    E: Tensor, prob: Problem, log_space: bool
) -> tuple[list[Tensor], Tensor]:
    """Run the forward and reversed recursions together, meeting in the middle.

    The recursion state and the stored states are float64 whatever ``E``'s dtype:
    within one frame the forward variables of far-apart states span hundreds of nats
    (float32 ends at e^-87), and the product of a stored state with its partner's must
    not underflow where the occupancy is large.

    Storage is banded: after ``k + 1`` steps a recursion can only have reached states
    ``s <= 2k + 1``, so slot ``k`` keeps ``w_k = min(S, 2k + 2)`` states, in the
    layout of the row that produced them.

    Args:
        E: ``(T, B, K + 2)`` emission table from :func:`_emission_table`.

    Returns:
        ``slots``: ``ceil(T/2)`` float64 tensors ``(B2, w_j)``. Row ``r`` of slot ``j``
        holds ``alpha_t(s) beta_t(s) / y_t(l'_s)`` (rescaled; its log in log space) in
        the label order of its partner row ``(r + B) mod B2``: for ``r < B`` frame
        ``T-1-j`` in reversed order, for ``r >= B`` frame ``j`` in forward order.
        ``logc``: ``(T, B2)`` float64 log of each step's normaliser (0 in log space).
    """
    T, B, Kx = E.shape
    B2, S = prob.columns.shape
    W = S + 2
    dev, f64 = E.device, torch.float64
    half = (T + 1) // 2
    zero = float("-inf") if log_space else 0.0
    A = torch.full((B2, W), zero, dtype=f64, device=dev)  # state incl. 2 pad columns
    A[:, 2] = 0.0 if log_space else 1.0  # "before frame 0": all mass on state 0
    cur, prev1, prev2 = A[:, 2:], A[:, 1:-1], A[:, :-2]
    pre_buf = torch.full((B2, S + 1), zero, dtype=f64, device=dev)  # col S: "none"
    pre = pre_buf[:, :S]
    tmp = torch.empty(B2, S, dtype=f64, device=dev)
    y = torch.empty(B2, S, dtype=E.dtype, device=dev)  # multiplied into float64
    rows = torch.empty(2, B, Kx, dtype=E.dtype, device=dev)
    rows2 = rows.view(B2, Kx)
    ks = torch.arange(T, device=dev)
    frames = torch.stack([ks, T - 1 - ks], 1).unbind(0)  # step k: frames k and T-1-k
    widths = [min(S, 2 * k + 2) for k in range(half)]
    storage = torch.empty(B2 * sum(widths), dtype=f64, device=dev)
    slots = list(storage.split([B2 * w for w in widths]))
    slots = [x.view(B2, w) for x, w in zip(slots, widths, strict=True)]
    c = torch.ones(T, B2, 1, dtype=f64, device=dev)
    c_rows = c.unbind(0)
    swap = torch.arange(B2, device=dev).roll(B)
    skip = prob.skip
    log_skip = torch.log(skip)  # 0 or -inf
    columns, meet_index = prob.columns, prob.meet_index
    for k in range(T):
        torch.index_select(E, 0, frames[k], out=rows)  # (2, B, K+2): both directions
        torch.gather(rows2, 1, columns, out=y)  # (B2, S)
        if log_space:
            torch.logaddexp(cur, prev1, out=pre)
            torch.add(prev2, log_skip, out=tmp)
            torch.logaddexp(pre, tmp, out=pre)
            torch.add(pre, y, out=cur)
        else:
            torch.add(cur, prev1, out=pre)
            pre.addcmul_(prev2, skip)
            torch.mul(pre, y, out=cur)
            if k % _RESCALE_EVERY == _RESCALE_EVERY - 1 or k == half - 1:
                # Rescaling every few steps keeps the state far inside float64's
                # range (a step shrinks it by the sample's emission probabilities,
                # never grows it more than 3x); a shrink that does underflow is caught
                # by the check afterwards. Slot half-1 is the largest ever stored.
                ck = c_rows[k]
                torch.sum(cur, 1, keepdim=True, out=ck)
                cur.div_(ck)
        if k < half:
            # Keep this step's reachable states for the partner row to meet later.
            slot = slots[k]
            torch.index_select(cur[:, : widths[k]], 0, swap, out=slot)
            if k == T - 1 - k:  # odd T: both directions are at the middle frame now
                _meet(slot, pre_buf, meet_index, tmp, log_space)
        else:
            _meet(slots[T - 1 - k], pre_buf, meet_index, tmp, log_space)
    return slots, c.squeeze(2).log_()


def _meet(
    slot: Tensor, pre_buf: Tensor, meet_index: Tensor, tmp: Tensor, log_space: bool
) -> None:
    """Combine a stored partner state with this step's pre-emission value, in place.

    Args:
        slot: ``(B2, w)`` stored partner states, in the partner's label order.
        pre_buf: ``(B2, S + 1)`` this step's pre-emission values; column S is "none".
    """
    w = slot.shape[1]
    own = tmp[:, :w]
    torch.gather(pre_buf, 1, meet_index[:, :w], out=own)
    if log_space:
        slot.add_(own)
    else:
        slot.mul_(own)


def _atomic_free(device: torch.device) -> bool:
    """Whether scatter-adds must avoid atomics to stay deterministic on ``device``.

    The CPU kernels add in index order; CUDA's use floating-point atomics, whose order
    varies from run to run. (Tests force the atomic-free path on the CPU.)
    """
    return device.type != "cpu"


def _fold_labels(occ: Tensor, labels: Tensor, out: Tensor) -> None:
    """Add label-state occupancies to their classes, deterministically.

    Args:
        occ: ``(N, R, L)`` occupancy of the label states (odd states) of each row.
        labels: ``(R, L)`` class (column of ``out``) of each label state.
        out: ``(N, R, K)``, accumulated into.
    """
    if occ.shape[2] == 0:
        return
    if not _atomic_free(out.device):
        # The CPU scatter kernel adds in index order: deterministic.
        out.scatter_add_(2, labels[None].expand_as(occ), occ)
        return
    _fold_labels_ordered(occ, labels, out)


def _fold_labels_ordered(occ: Tensor, labels: Tensor, out: Tensor) -> None:
    """Atomic-free fold for devices whose scatter-add order is not fixed (CUDA).

    Each label's occurrences within a row are summed in position order into its first
    occurrence, then every distinct (row, class) is written exactly once.
    """
    R, L = labels.shape
    same = labels[:, :, None] == labels[:, None, :]  # (R, L, L)
    earlier = torch.tril(torch.ones(L, L, dtype=torch.bool, device=labels.device), -1)
    first = ~(same & earlier[None]).any(2)  # (R, L): no earlier equal label
    pos = torch.arange(L, device=labels.device)
    # For each first occurrence, the positions of all its occurrences, padded with L.
    members = torch.where(same & first[:, :, None], pos[None, None, :], L)
    members = members.sort(2).values  # (R, L, L)
    n_rank = int((members < L).sum(2).max())
    padded = torch.cat([occ, occ.new_zeros(occ.shape[0], R, 1)], 2)  # index L -> 0
    total = padded.gather(2, members[:, :, 0][None].expand_as(occ))
    for r in range(1, n_rank):
        total = total + padded.gather(2, members[:, :, r][None].expand_as(occ))
    rr, ii = first.nonzero(as_tuple=True)
    out[:, rr, labels[rr, ii]] += total[:, rr, ii]


def _slot_chunk(
    slots: list[Tensor], j0: int, j1: int, buf: Tensor, empty: float
) -> Tensor:
    """Slots ``j0..j1-1`` as one ``(n, B2, S)`` tensor, a view where widths allow.

    Narrower slots are copied into ``buf`` (``(chunk, B2, S)``); states past a slot's
    width were unreachable and read as ``empty``.
    """
    n, S = j1 - j0, buf.shape[2]
    first = slots[j0]
    if first.shape[1] == S:  # widths only grow: the whole chunk is full width
        return first.as_strided((n, *first.shape), (first.numel(), S, 1))
    out = buf[:n]
    out.fill_(empty)
    for i, j in enumerate(range(j0, j1)):
        out[i, :, : slots[j].shape[1]] = slots[j]
    return out


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
    prob = build_problem(padded, tg_lens, blank, table, dev)
    K = prob.classes.shape[1]
    blank_col = (prob.classes == blank).int().argmax(1)  # (B,) first blank column
    E, m = _emission_table(lp, prob.classes, blank_col, in_lens, log_space)
    slots, logc = _joint_loop(E, prob, log_space)
    del E
    half, lower = (T + 1) // 2, T // 2
    B2, S = prob.columns.shape
    in_lens_d = in_lens.to(dev)
    # The frame each (slot j, row r) describes: row r < B frame T-1-j, else frame j.
    j = torch.arange(half, device=dev)
    t_of = torch.cat(
        [(T - 1 - j)[:, None].expand(half, B), j[:, None].expand(half, B)], 1
    )
    # Rows < B of the middle slot (odd T) duplicate rows >= B: use one of them.
    use = t_of < in_lens_d.repeat(2)[None, :]
    use[:, :B] &= (j < lower)[:, None]
    # Label order of each slot row is its partner's: rows < B reversed, rows >= B
    # forward; compact class of each state in that order.
    compact = prob.compact.roll(B, 0)
    lab = compact[:, 1::2]
    blank_of = blank_col.repeat(2)
    # Every frame's occupancy is written exactly once below (frame t < ceil(T/2) by
    # rows >= B of slot t, the others by rows < B of slot T-1-t).
    occ = torch.empty(T, B, K, dtype=dt, device=dev) if need_grad else None
    log_d = torch.empty(half, B2, dtype=torch.float64, device=dev)
    chunk = _chunk(B2 * K * 8)  # the float64 class fold of one slot
    n_max = min(chunk, half)
    # Narrow (banded) slots are padded to full width in a small reused buffer.
    buf = torch.empty(min(4, half), B2, S, dtype=torch.float64, device=dev)
    g = buf
    part_buf = torch.empty(n_max, B2, K, dtype=torch.float64, device=dev)
    empty = float("-inf") if log_space else 0.0
    j0 = 0
    while j0 < half:
        full = slots[j0].shape[1] == S
        j1 = min(half, j0 + (chunk if full else buf.shape[0]))
        if not full:  # stop at the first full-width slot: the rest is a view
            j1 = next((j for j in range(j0, j1) if slots[j].shape[1] == S), j1)
        g = _slot_chunk(slots, j0, j1, buf, empty)  # (n, B2, S) float64, ours to change
        if log_space:
            mx = g.amax(2)
            g.sub_(mx[:, :, None]).exp_()
            d = g.sum(2)
            log_d[j0:j1] = mx + d.log()
        else:
            d = g.sum(2)
            log_d[j0:j1] = d.log()
        if occ is None:
            j0 = j1
            continue
        # Occupancy gamma = G / D, zero off real frames, folded onto compact classes.
        g.div_(d[:, :, None])  # gamma
        # Rows < B describe frames T-1-j, rows >= B frames j: all real unless a frame
        # lies past the shortest input (decided on the host, no device sync).
        if T - j1 >= min_len or (T % 2 and j1 > lower):
            g.masked_fill_(~use[j0:j1, :, None], 0.0)
        part = part_buf[: j1 - j0].zero_()
        part.scatter_(
            2,
            blank_of[None, :, None].expand(j1 - j0, B2, 1),
            g[:, :, 0::2].sum(2, keepdim=True),
        )
        _fold_labels(g[:, :, 1::2], lab, part)
        occ[j0:j1] = part[:, B:]  # rows >= B: frame j
        f1 = min(j1, lower)
        if j0 < f1:  # rows < B: frame T-1-j
            occ[T - f1 : T - j0] = part[: f1 - j0, :B].flip(0)
        j0 = j1
    del slots, g, buf, part_buf  # the storage goes before the gradient arrives

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
    empty_target = tg_lens.to(dev) == 0
    nll = torch.where(no_frames, torch.where(empty_target, 0.0, float("inf")), nll)
    ok = ok | no_frames
    return nll, occ, ok


def gradient(
    lp: Tensor,
    occ: Tensor,
    classes: Tensor,
    in_lens: Tensor,
    weight: Tensor,
    dead: Tensor,
    zero_infinity: bool,
) -> Tensor:
    """Torch's convention: ``weight_b * (exp(lp) - occupancy)`` on real frames, else 0.

    Args:
        lp: ``(T, B, C)`` log-probabilities in the compute dtype.
        occ: ``(T, B, K)`` occupancy of each sample's compact classes.
        classes: ``(B, K)`` the class of each compact column, from
            :func:`sample_classes`.
        weight: ``(B,)`` upstream gradient of each sample's loss.
        dead: ``(B,)`` samples whose loss is infinite: 0 with ``zero_infinity``,
            otherwise NaN on their real frames, as torch gives.
    """
    T, B, _ = lp.shape
    K = classes.shape[1]
    dev = lp.device
    grad = torch.exp(lp)
    if not _atomic_free(dev):
        # The CPU scatter adds in index order: deterministic.
        grad.scatter_add_(2, classes[None].expand(T, B, K), -occ)
    else:
        # Each (sample, class) pair that carries occupancy is a distinct (b, c): a
        # plain indexed write, no floating-point atomics.
        first = torch.ones_like(classes, dtype=torch.bool)
        first[:, 1:] = classes[:, 1:] != classes[:, :-1]  # ascending, padding repeats
        bb, ii = first.nonzero(as_tuple=True)
        cc = classes[bb, ii]
        for t0 in range(0, T, _CHUNK):
            t1 = min(T, t0 + _CHUNK)
            g = grad[t0:t1]
            g[:, bb, cc] -= occ[t0:t1, bb, ii]
    grad.mul_(weight.to(grad.dtype)[None, :, None])
    if dead.any():
        fill = 0.0 if zero_infinity else float("nan")
        grad.masked_fill_(dead.to(dev)[None, :, None], fill)
    if int(in_lens.min()) < T:
        frame_ok = torch.arange(T, device=dev)[:, None] < in_lens.to(dev)[None, :]
        grad.masked_fill_(~frame_ok[:, :, None], 0.0)
    return grad
