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
6. **The host never waits inside the loop.** Lengths and targets arrive on the host,
   and everything that depends on them (index plans included) is decided there and
   sent to the device in one non-blocking copy; the one read-back per call is the
   mask of samples to redo. On CUDA the frame loop, which lives on buffers allocated
   once per padded shape (:mod:`asr.ctc.frames`), is captured as a CUDA graph the
   second time a shape is seen and replayed after: one launch instead of ``T`` times
   a handful.

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

from asr.ctc.loss import CTC_IMPLEMENTATIONS, CTCLoss, ctc_loss, resolve_ctc_loss

__all__ = ["CTC_IMPLEMENTATIONS", "CTCLoss", "ctc_loss", "resolve_ctc_loss"]
