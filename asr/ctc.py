"""Connectionist Temporal Classification loss, computed by our own forward-backward.

A drop-in for :func:`torch.nn.functional.ctc_loss` / :class:`torch.nn.CTCLoss`: same
signature, shapes, reductions and gradient convention, written only with torch tensor
operations so that one code path serves CPU and CUDA tensors.

The algorithm (Graves et al., 2006, "Connectionist Temporal Classification", sec. 4.1)
-------------------------------------------------------------------------------------
For a target ``l`` of length ``L`` the extended label sequence ``l'`` has ``S = 2L+1``
states: blanks at even positions, labels at odd ones. The forward variable
``alpha_t(s)`` sums the probabilities of all path prefixes ending in state ``s`` at
frame ``t``, the backward variable ``beta_t(s)`` those of the suffixes, and
``alpha_t(s) beta_t(s) / y_t(l'_s)`` summed over the states of one class gives the
occupancy from which the gradient follows (Eq. 14-16).

How it is organised, and why. The loop over frames is inherently sequential; on a CPU
its cost is the number of tensor operations per step, on a GPU the number of kernel
launches, so everything below cuts those.

1. **Rescaled probabilities** (the paper's Eq. 16 rescaling, not log space): a step is
   "add two shifted copies, multiply by the emissions", four cheap operations instead of
   the dozen of a log-sum-exp, plus a rescaling every few steps. Emissions are taken
   relative to the best of the sample's own classes at that frame, ``exp(lp - m_t)``,
   and the scales are accumulated in float64: ``-log P = -sum_t (log c_t + m_t)``. The
   state itself is float64, since within one frame the forward variables of distant
   states span hundreds of nats (float32 underflows at e^-87).
2. **One loop for both directions.** The backward recursion is the forward recursion of
   the *reversed* problem (frames and label sequence reversed), so forward problems
   (rows ``0..B-1``) and reversed ones (rows ``B..2B-1``) share one ``(2B, S)`` state
   and one loop of ``T`` steps. A reversed row waits at its start state through the
   padded frames, so every sample's reversed recursion reaches frame 0 at the last step.
3. **Meet in the middle.** During the first ``ceil(T/2)`` steps each step's state is
   stored, rows swapped with their partner; during the rest each row multiplies the
   stored partner state of the same frame by its own pre-emission value (reordered into
   the partner's label order), which leaves ``alpha beta / y`` in place. Storage is
   banded (after ``k + 1`` steps only states ``s <= 2k + 1`` are reachable), so it
   takes about three quarters of an alpha table plus a beta table.
4. **Compact emissions.** Each sample reads its emissions from a table of its own
   classes only (its labels and the blank), so nothing of size ``C`` is touched inside
   the loop, and a large vocabulary costs no more than a small one.
5. **Exactness check and log-space fallback.** In exact arithmetic
   ``sum_s alpha_t(s) beta_t(s) / y_t(l'_s) = P(l|x)`` for *every* frame ``t``. We
   evaluate this identity at every frame from the rescaled quantities; where the
   estimates disagree beyond rounding (the recursion lost mass to underflow, as with
   extremely peaked outputs), that sample alone is recomputed in log space in float64.

Gradient convention
-------------------
Like torch's native kernel we return ``d loss / d log_probs = exp(log_probs) - occ``,
where ``occ`` is the occupancy of each class at each frame: Graves' Eq. 16 for the
gradient w.r.t. the unnormalised outputs, expressed so that it flows through
``log_softmax``. The exact partial derivative w.r.t. free ``log_probs`` is ``-occ``; the
two differ by ``exp(log_probs)``, which ``log_softmax``'s backward removes exactly
because a frame's occupancies sum to one. We follow torch so that switching one loss
for the other changes nothing downstream; the consequence is that the gradient is exact
for normalised log-probabilities (the only meaningful CTC input) and a gradcheck must
go through ``log_softmax``.

Determinism
-----------
Every reduction has a fixed order: sums over a dimension, a cumulative sum, gathers and
index copies. Folding state occupancies onto classes (several states share a class)
uses ``scatter_add_`` on the CPU, which adds in index order; on other devices the
repeated occurrences of a label are summed in a fixed order and each class is written
once, so no floating-point atomics are involved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["CTC_IMPLEMENTATIONS", "CTCLoss", "ctc_loss", "resolve_ctc_loss"]

_Lengths = Tensor | Sequence[int]


def ctc_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: _Lengths,
    target_lengths: _Lengths,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    """CTC loss with the signature and semantics of ``torch.nn.functional.ctc_loss``.

    Args:
        log_probs: ``(T, B, C)`` or unbatched ``(T, C)`` log-probabilities (normally the
            output of ``log_softmax``). float64 is computed in float64; float32, float16
            and bfloat16 are computed in float32 and returned in their own dtype.
        targets: padded ``(B, S_max)`` or concatenated 1-D ``(sum(target_lengths),)``
            class indices; unbatched input takes ``(S,)``. Entries past a sample's
            target length are ignored (never read).
        input_lengths: ``(B,)`` frames per sample, each ``<= T``.
        target_lengths: ``(B,)`` labels per sample.
        blank: index of the blank class.
        reduction: ``"none"`` gives ``(B,)`` (``()`` unbatched); ``"sum"`` the sum;
            ``"mean"`` divides each loss by its target length (clamped to 1) and
            averages over the batch.
        zero_infinity: infinite losses (infeasible pairs) and their gradients become 0.

    Raises:
        ValueError: shapes that do not fit, lengths out of range, or a target label that
            is negative, ``>= C`` or equal to ``blank``; the message names the sample.
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(
            f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}"
        )
    unbatched = log_probs.dim() == 2
    if unbatched:
        log_probs = log_probs.unsqueeze(1)  # (T, C) -> (T, 1, C)
        if targets.dim() != 1:
            raise ValueError(
                "unbatched log_probs (T, C) take 1-D targets, got shape "
                f"{tuple(targets.shape)}"
            )
        targets = targets.unsqueeze(0)  # (S,) -> (1, S)
    elif log_probs.dim() != 3:
        raise ValueError(
            f"log_probs must be (T, B, C) or (T, C), got shape {tuple(log_probs.shape)}"
        )
    T, B, C = log_probs.shape
    in_lens = _as_lengths(input_lengths, B, "input_lengths")
    tg_lens = _as_lengths(target_lengths, B, "target_lengths")
    padded = _padded_targets(targets, tg_lens, B)
    _validate(padded, in_lens, tg_lens, T, C, blank)

    losses = _CTCFunction.apply(
        log_probs, padded, in_lens, tg_lens, blank, zero_infinity
    )  # (B,)
    if reduction == "none":
        return losses.squeeze(0) if unbatched else losses
    if reduction == "sum":
        return losses.sum()
    divisor = tg_lens.clamp(min=1).to(device=losses.device, dtype=losses.dtype)
    return (losses / divisor).mean()


def _torch_ctc_loss(*args, **kwargs) -> Tensor:
    return torch.nn.functional.ctc_loss(*args, **kwargs)


# Training code chooses the implementation by name (one config key), e.g. to compare.
CTC_IMPLEMENTATIONS = {"asr": ctc_loss, "torch": _torch_ctc_loss}


def resolve_ctc_loss(name: str) -> Callable[..., Tensor]:
    """The CTC loss function called ``name``: ``"asr"`` (ours) or ``"torch"``.

    Both take the arguments of ``torch.nn.functional.ctc_loss``.
    """
    try:
        return CTC_IMPLEMENTATIONS[name]
    except KeyError:
        known = ", ".join(sorted(CTC_IMPLEMENTATIONS))
        raise ValueError(
            f"unknown CTC implementation {name!r}; choose one of: {known}"
        ) from None


class CTCLoss(nn.Module):
    """Module form of :func:`ctc_loss`, with the constructor of ``torch.nn.CTCLoss``."""

    def __init__(
        self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False
    ) -> None:
        super().__init__()
        self.blank = blank
        self.reduction = reduction
        self.zero_infinity = zero_infinity

    def forward(
        self,
        log_probs: Tensor,
        targets: Tensor,
        input_lengths: _Lengths,
        target_lengths: _Lengths,
    ) -> Tensor:
        return ctc_loss(
            log_probs,
            targets,
            input_lengths,
            target_lengths,
            blank=self.blank,
            reduction=self.reduction,
            zero_infinity=self.zero_infinity,
        )

    def extra_repr(self) -> str:
        return (
            f"blank={self.blank}, reduction={self.reduction!r}, "
            f"zero_infinity={self.zero_infinity}"
        )


# --------------------------------------------------------------------------------------
# Argument handling. Lengths and targets are validated on the host: torch's kernel reads
# out of bounds on a bad label, we refuse it and say which sample.


def _as_lengths(lengths: _Lengths, batch: int, name: str) -> Tensor:
    """Lengths as a CPU int64 tensor of shape ``(B,)``."""
    if isinstance(lengths, Tensor):
        if lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(f"{name} must hold integers, got dtype {lengths.dtype}")
        out = lengths.detach().to("cpu", torch.int64).reshape(-1)
    else:
        out = torch.as_tensor(list(lengths), dtype=torch.int64).reshape(-1)
    if out.numel() != batch:
        raise ValueError(f"{name} has {out.numel()} entries for a batch of {batch}")
    return out


def _padded_targets(targets: Tensor, tg_lens: Tensor, batch: int) -> Tensor:
    """Targets as a ``(B, L_max)`` int64 CPU tensor, from padded or concatenated."""
    if targets.is_floating_point() or targets.is_complex():
        raise ValueError(f"targets must hold integers, got dtype {targets.dtype}")
    tgt = targets.detach().to("cpu", torch.int64)
    if tgt.dim() == 2:
        if tgt.shape[0] != batch:
            raise ValueError(f"targets has {tgt.shape[0]} rows for a batch of {batch}")
        too_long = (tg_lens > tgt.shape[1]).nonzero().flatten()
        if too_long.numel():
            b = int(too_long[0])
            raise ValueError(
                f"sample {b}: target_length {int(tg_lens[b])} exceeds the padded "
                f"targets width {tgt.shape[1]}"
            )
        return tgt
    if tgt.dim() != 1:
        raise ValueError(f"targets must be 1-D or 2-D, got shape {tuple(tgt.shape)}")
    if (tg_lens < 0).any():
        b = int((tg_lens < 0).nonzero()[0])
        raise ValueError(f"sample {b}: negative target_length {int(tg_lens[b])}")
    total = int(tg_lens.sum())
    if total != tgt.numel():
        raise ValueError(
            f"concatenated targets hold {tgt.numel()} labels but target_lengths sum "
            f"to {total}"
        )
    width = int(tg_lens.max()) if batch else 0
    out = torch.zeros(batch, width, dtype=torch.int64)
    # Scatter the concatenation into rows: position j of sample b is at offset[b] + j.
    offsets = torch.cumsum(tg_lens, 0) - tg_lens
    pos = torch.arange(width)
    mask = pos[None, :] < tg_lens[:, None]
    out[mask] = tgt[(offsets[:, None] + pos[None, :])[mask]]
    return out


def _validate(
    padded: Tensor, in_lens: Tensor, tg_lens: Tensor, T: int, C: int, blank: int
) -> None:
    if not 0 <= blank < C:
        raise ValueError(f"blank index {blank} is outside the {C} classes")
    for name, lens, limit in (
        ("input_length", in_lens, T),
        ("target_length", tg_lens, None),
    ):
        bad = (lens < 0) if limit is None else (lens < 0) | (lens > limit)
        if bad.any():
            b = int(bad.nonzero()[0])
            bound = "" if limit is None else f" (the input has {limit} frames)"
            raise ValueError(
                f"sample {b}: {name} {int(lens[b])} is out of range{bound}"
            )
    valid = torch.arange(padded.shape[1])[None, :] < tg_lens[:, None]
    bad = valid & ((padded < 0) | (padded >= C) | (padded == blank))
    if bad.any():
        b, i = (int(v) for v in bad.nonzero()[0])
        label = int(padded[b, i])
        why = "is the blank index" if label == blank else f"is outside [0, {C})"
        raise ValueError(f"sample {b}: target label {label} at position {i} {why}")


# --------------------------------------------------------------------------------------
# The computation.


@dataclass
class _Problem:
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


def _sample_classes(
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


def _build_problem(
    padded: Tensor,
    tg_lens: Tensor,
    blank: int,
    table: tuple[Tensor, Tensor],
    device: torch.device,
) -> _Problem:
    """The stacked problem; ``table`` is :func:`_sample_classes`' output."""
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
    return _Problem(
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
    E: Tensor, prob: _Problem, log_space: bool
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


def _forward_backward(
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
        classes of :func:`_sample_classes`; ``ok`` is False where the rescaled
        recursion could not be trusted (always True in log space).
    """
    T, B, C = lp.shape
    dev, dt = lp.device, lp.dtype
    min_len = int(in_lens.min())
    if table is None:
        table = _sample_classes(padded, tg_lens, blank, C)
    prob = _build_problem(padded, tg_lens, blank, table, dev)
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


def _gradient(
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
            :func:`_sample_classes`.
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


def _compute(
    lp: Tensor,
    padded: Tensor,
    in_lens: Tensor,
    tg_lens: Tensor,
    blank: int,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Rescaled computation with per-sample log-space fallback.

    Returns:
        ``(nll (B,), occ (T, B, K) or None, dead (B,) bool, classes (B, K))``:
        ``dead`` marks infinite losses (infeasible pairs, no frames for a non-empty
        target); ``occ`` is over the compact ``classes`` of each sample.
    """
    T, B, C = lp.shape
    table = _sample_classes(padded, tg_lens, blank, C)
    classes = table[0]
    if T == 0 or B == 0:  # no frames: P = 1 for empty targets, else 0
        nll = torch.where(tg_lens == 0, 0.0, float("inf")).to(lp)
        occ = lp.new_zeros(T, B, classes.shape[1]) if need_grad else None
        return nll, occ, torch.isinf(nll), classes
    nll, occ, ok = _forward_backward(
        lp, padded, in_lens, tg_lens, blank, False, need_grad, table
    )
    # A target needs one frame per label plus one between equal neighbours.
    inside = torch.arange(1, max(1, padded.shape[1]))[None, :] < tg_lens[:, None]
    repeats = ((padded[:, 1:] == padded[:, :-1]) & inside).sum(1)
    infeasible = (tg_lens + repeats > in_lens).to(lp.device)
    redo = (~ok & ~infeasible).nonzero().flatten()
    if redo.numel():
        # The rescaled recursion lost mass for these samples (extremely peaked
        # outputs): redo them in log space, in float64.
        idx_cpu = redo.cpu()
        sub_nll, sub_occ, _ = _forward_backward(
            lp[:, redo].double(),
            padded[idx_cpu],
            in_lens[idx_cpu],
            tg_lens[idx_cpu],
            blank,
            True,
            need_grad,
            (table[0][idx_cpu], table[1][idx_cpu]),
        )
        nll[redo] = sub_nll.to(nll.dtype)
        if occ is not None:
            occ[:, redo] = sub_occ.to(occ.dtype)
    nll = torch.where(infeasible, float("inf"), nll)
    return nll, occ, infeasible | torch.isinf(nll), classes


class _CTCFunction(torch.autograd.Function):
    """Per-sample CTC negative log-likelihood with the analytic gradient.

    The forward pass (one loop gives alpha and beta) keeps only the occupancy of each
    sample's own classes, ``(T, B, K)``; backward builds ``exp(lp) - occupancy``
    scaled by the upstream weights in one fresh ``(T, B, C)`` tensor, so it can run
    any number of times (gradcheck, ``retain_graph``).
    """

    @staticmethod
    def forward(ctx, log_probs, padded, in_lens, tg_lens, blank, zero_infinity):
        compute_dtype = (
            torch.float64 if log_probs.dtype == torch.float64 else torch.float32
        )
        lp = log_probs.detach().to(compute_dtype)
        need_grad = ctx.needs_input_grad[0]
        nll, occ, dead, classes = _compute(
            lp, padded, in_lens, tg_lens, blank, need_grad
        )
        if zero_infinity:
            nll = nll.masked_fill(dead, 0.0)
        if need_grad:
            ctx.save_for_backward(log_probs, occ)
            ctx.classes = classes
            ctx.in_lens = in_lens
            ctx.dead = dead
            ctx.zero_infinity = zero_infinity
        return nll.to(log_probs.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll):
        log_probs, occ = ctx.saved_tensors
        lp = log_probs.detach().to(occ.dtype)
        classes = ctx.classes.to(lp.device)
        grad = _gradient(
            lp, occ, classes, ctx.in_lens, grad_nll, ctx.dead, ctx.zero_infinity
        )
        return grad.to(log_probs.dtype), None, None, None, None, None
