"""Decoding CTC outputs into label sequences.

Greedy (best path) decoding: the most probable class per frame, repeats merged, blanks
dropped (Graves et al. 2006, sec. 3.2), batched on the model's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["greedy_decode"]


def greedy_decode(
    log_probs: Tensor, out_lens: Tensor, blank: int = 0
) -> list[list[int]]:
    """Best-path label sequences.

    Args:
        log_probs: ``(T, B, V)`` log-probabilities (or any scores).
        out_lens: ``(B,)`` valid frames.
        blank: the blank index.

    Returns:
        ``B`` lists of label indices.
    """
    best = log_probs.argmax(-1).t()  # (T, B) -> (B, T)
    T = best.shape[1]
    keep = best != blank
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]  # first frame of each run only
    keep &= torch.arange(T, device=best.device)[None, :] < out_lens[:, None].to(
        best.device
    )
    best, keep = best.cpu(), keep.cpu()
    return [row[mask].tolist() for row, mask in zip(best, keep, strict=True)]
