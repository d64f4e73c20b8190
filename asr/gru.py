"""A GRU layer for the CPU: a whole sequence in one autograd node, both directions.

``torch.nn.GRU`` on the CPU runs a packed batch one time step at a time through
autograd: every step projects its input separately and records about a dozen small
operations, and the backward pass replays them one by one, computing the weight
gradients of every step as its own small matrix product. For DeepSpeech2's short,
narrow batches that bookkeeping, not arithmetic, dominates a training step.

:func:`gru_layer` computes the same function (PyTorch's GRU equations, weights and
parameter names, so checkpoints are interchangeable) with

- the input projections of all steps and both directions as one matrix product;
- the recurrence in a custom :class:`torch.autograd.Function` whose forward loop is
  one batched matrix product (``baddbmm`` over the directions) and five element-wise
  operations per step, and whose backward pass is the analytic back-propagation
  through time: three element-wise operations and one ``baddbmm`` per step, with the
  gate derivatives precomputed for all steps at once and the recurrent weight
  gradient as a single matrix product after the loop;
- the backward direction run on each sequence reversed within its own length, so
  padding never reaches a valid frame (the forward direction's padding comes after
  its valid frames and cannot).

Outputs past an utterance's length are not meaningful; callers mask them (and their
gradients are then zero). Measured on 2 CPU cores in ``tools/bench_rnn.py``. The model
uses it for training on the CPU only: without autograd (inference, validation)
``nn.GRU`` is as fast or faster, and on CUDA cuDNN's fused kernels are.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["gru_layer", "reverse_padded"]


def reverse_padded(x: Tensor, lens: Tensor) -> Tensor:
    """Reverse ``x`` ``(T, B, ...)`` in time within each sequence's length.

    Frames at or past ``lens[b]`` stay where they are; applying it twice is the
    identity, so the same call undoes it.
    """
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]
    lens = lens.to(x.device)[None, :]
    index = torch.where(t < lens, lens - 1 - t, t)  # (T, B)
    index = index.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


class _GRURecurrence(torch.autograd.Function):
    """``gi (T, D, B, 3H)``, ``w_hh (D, 3H, H)``, ``b_hh (D, 3H)`` -> ``(T, D, B, H)``.

    ``gi`` holds the input projections ``x W_ih^T + b_ih`` of every step; the hidden
    state starts at zero. PyTorch's gate order and equations::

        r = sigmoid(gi_r + gh_r)        gh = h W_hh^T + b_hh
        z = sigmoid(gi_z + gh_z)
        n = tanh(gi_n + r * gh_n)
        h' = n + z * (h - n)
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(
        ctx: Any,
        gi: Tensor,
        w_hh: Tensor,
        b_hh: Tensor,
        matmul_dtype: torch.dtype | None = None,
    ) -> Tensor:
        T, D, B, G = gi.shape
        H = G // 3
        low = matmul_dtype if matmul_dtype not in (None, gi.dtype) else None
        w_t = w_hh.transpose(1, 2)  # (D, H, 3H)
        w_t_low = w_t.to(low) if low else w_t
        bias = b_hh.unsqueeze(1)  # (D, 1, 3H)
        out = gi.new_empty(T, D, B, H)
        gh_all = gi.new_empty(T, D, B, G)
        rz_all = gi.new_empty(T, D, B, 2 * H)
        n_all = gi.new_empty(T, D, B, H)
        h = gi.new_zeros(D, B, H)
        for t in range(T):
            if low:  # the product in low precision, the state in float32
                product = torch.bmm(h.to(low), w_t_low)
                gh = torch.add(bias, product, out=gh_all[t])
            else:
                gh = torch.baddbmm(bias, h, w_t, out=gh_all[t])
            g = gi[t]
            rz = torch.sigmoid(g[..., : 2 * H] + gh[..., : 2 * H], out=rz_all[t])
            n = torch.tanh(
                torch.addcmul(g[..., 2 * H :], rz[..., :H], gh[..., 2 * H :]),
                out=n_all[t],
            )
            h = torch.lerp(n, h, rz[..., H:], out=out[t])
        ctx.save_for_backward(w_hh, out, gh_all, rz_all, n_all)
        ctx.low = low
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        w_hh, out, gh_all, rz_all, n_all = ctx.saved_tensors
        low = ctx.low
        T, D, B, H = out.shape
        r, z = rz_all[..., :H], rz_all[..., H:]
        n, gh_n = n_all, gh_all[..., 2 * H :]
        h_prev = torch.cat([out.new_zeros(1, D, B, H), out[:-1]])
        # d(pre-activations) = d(h_t total) * coefficient, for every step at once.
        a = (1 - z) * (1 - n * n)  # -> n's pre-activation, = d gi_n
        c_r = a * gh_n * r * (1 - r)  # -> r's pre-activation
        c_z = (h_prev - n) * z * (1 - z)  # -> z's pre-activation
        # -> d gh per unit of d h; the loop scales it in place into d gh itself.
        d_gh = torch.cat([c_r, c_z, a * r], -1)  # (T, D, B, 3H)
        k = d_gh.view(T, D, B, 3, H)
        grad_out = grad_out.to(out.dtype).contiguous()
        w_low = w_hh.to(low) if low else w_hh
        dh_total = torch.empty_like(out)
        dh = out.new_zeros(D, B, H)
        for t in range(T - 1, -1, -1):
            dht = torch.add(grad_out[t], dh, out=dh_total[t])
            dgh = k[t].mul_(dht.unsqueeze(2)).view(D, B, 3 * H)
            if low:
                dh = torch.bmm(dgh.to(low), w_low).add_(dht * z[t])
            else:
                dh = torch.baddbmm(dht * z[t], dgh, w_hh)
        d_gi = torch.cat([d_gh[..., : 2 * H], dh_total * a], -1)
        # sum over steps and batch of d_gh^T h_prev: one product per direction.
        d_gh_d = d_gh.permute(1, 3, 0, 2).reshape(D, 3 * H, T * B)
        h_prev_d = h_prev.permute(1, 0, 2, 3).reshape(D, T * B, H)
        if low:
            d_w_hh = torch.bmm(d_gh_d.to(low), h_prev_d.to(low)).float()
        else:
            d_w_hh = torch.bmm(d_gh_d, h_prev_d)
        d_b_hh = d_gh.sum((0, 2))
        return d_gi, d_w_hh, d_b_hh, None


def gru_layer(rnn: nn.GRU, x: Tensor, lens: Tensor) -> Tensor:
    """One layer of ``rnn`` (its weights) over ``x`` ``(T, B, I)``: ``(T, B, D*H)``.

    The same outputs as ``rnn`` on the packed batch at every frame before ``lens``
    (directions concatenated, forward first, like ``nn.GRU``); frames past ``lens``
    hold unspecified values.
    """
    if rnn.num_layers != 1 or rnn.batch_first or not rnn.bias:
        raise ValueError("gru_layer takes a single-layer, time-major GRU with biases")
    D = 2 if rnn.bidirectional else 1
    suffixes = ["", "_reverse"][:D]
    w_ih = [getattr(rnn, f"weight_ih_l0{s}") for s in suffixes]
    b_ih = [getattr(rnn, f"bias_ih_l0{s}") for s in suffixes]
    w_hh = torch.stack([getattr(rnn, f"weight_hh_l0{s}") for s in suffixes])
    b_hh = torch.stack([getattr(rnn, f"bias_hh_l0{s}") for s in suffixes])
    T, B, _ = x.shape
    H = rnn.hidden_size
    # Both directions' input projections in one product; the backward direction then
    # reads its sequence reversed within each length.
    gi = F.linear(x, torch.cat(w_ih), torch.cat(b_ih)).view(T, B, D, 3 * H)
    if D == 2:
        gi = torch.stack([gi[:, :, 0], reverse_padded(gi[:, :, 1], lens)], 1)
    else:
        gi = gi.permute(0, 2, 1, 3)
    # Under CPU autocast to bfloat16 (``precision: bf16-mixed``) the recurrent
    # products run in bfloat16 like every other matrix product; the state and the
    # gates stay in float32.
    low = None
    if torch.is_autocast_enabled("cpu"):
        low = torch.get_autocast_dtype("cpu")
    h = _GRURecurrence.apply(gi.contiguous(), w_hh, b_hh, low)  # (T, D, B, H)
    if D == 2:
        return torch.cat([h[:, 0], reverse_padded(h[:, 1], lens)], -1)
    return h[:, 0]
