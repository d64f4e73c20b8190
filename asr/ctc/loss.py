"""The CTC loss's interface: :func:`ctc_loss` and :class:`CTCLoss` with the signature
and semantics of torch's, argument checking, and the autograd function around the
computation of :mod:`asr.ctc.recursion` (the algorithm is described in :mod:`asr.ctc`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from asr.ctc.recursion import forward_backward, gradient, sample_classes, to_device

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
    (divisor,) = to_device([tg_lens.clamp(min=1)], losses.device)
    divisor = divisor.to(losses.dtype)
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
# The computation (asr.ctc.recursion) with its log-space fallback, and the gradient.


def _compute(
    lp: Tensor,
    padded: Tensor,
    in_lens: Tensor,
    tg_lens: Tensor,
    blank: int,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
    """Rescaled computation with per-sample log-space fallback.

    Reads the device back once (which samples to redo), whatever the lengths.

    Returns:
        ``(nll (B,), occ (T, B, K) or None, dead (B,) bool or None, classes (B, K))``:
        ``dead`` marks infinite losses (infeasible pairs, no frames for a non-empty
        target), None where there can be none; ``occ`` is over the compact
        ``classes`` of each sample (a host tensor).
    """
    T, B, C = lp.shape
    table = sample_classes(padded, tg_lens, blank, C)
    classes = table[0]
    if T == 0 or B == 0:  # no frames: P = 1 for empty targets, else 0
        (empty,) = to_device([tg_lens == 0], lp.device)
        nll = torch.where(empty, 0.0, float("inf")).to(lp.dtype)
        occ = lp.new_zeros(T, B, classes.shape[1]) if need_grad else None
        return nll, occ, torch.isinf(nll), classes
    nll, occ, ok = forward_backward(
        lp, padded, in_lens, tg_lens, blank, False, need_grad, table
    )
    # A target needs one frame per label plus one between equal neighbours.
    inside = torch.arange(1, max(1, padded.shape[1]))[None, :] < tg_lens[:, None]
    repeats = ((padded[:, 1:] == padded[:, :-1]) & inside).sum(1)
    infeasible_host = tg_lens + repeats > in_lens
    (infeasible,) = to_device([infeasible_host], lp.device)
    # The one read-back of the call: the samples to redo, as a host mask.
    redo = (~ok & ~infeasible).cpu().nonzero().flatten()
    if redo.numel():
        # The rescaled recursion lost mass for these samples (extremely peaked
        # outputs): redo them in log space, in float64.
        (redo_d,) = to_device([redo], lp.device)
        sub_nll, sub_occ, _ = forward_backward(
            lp[:, redo_d].double(),
            padded[redo],
            in_lens[redo],
            tg_lens[redo],
            blank,
            True,
            need_grad,
            (table[0][redo], table[1][redo]),
        )
        nll[redo_d] = sub_nll.to(nll.dtype)
        if occ is not None:
            occ[:, redo_d] = sub_occ.to(occ.dtype)
    nll = torch.where(infeasible, float("inf"), nll)
    # Where the rescaled recursion was trusted its loss is finite; only infeasible
    # pairs and redone samples can be infinite.
    maybe_dead = bool(infeasible_host.any()) or redo.numel() > 0
    dead = infeasible | torch.isinf(nll) if maybe_dead else None
    return nll, occ, dead, classes


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
        if zero_infinity and dead is not None:
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
        grad = gradient(
            lp, occ, ctx.classes, ctx.in_lens, grad_nll, ctx.dead, ctx.zero_infinity
        )
        return grad.to(log_probs.dtype), None, None, None, None, None
