"""One step of a streaming (unidirectional) DeepSpeech2 as a graph with explicit state.

:mod:`asr.streaming` keeps each stream's state in Python objects; a runtime outside
Python needs it as tensors in and out of one graph. :class:`StreamStep` is that
graph's PyTorch form, which :func:`asr.export.export_model` (``streaming=True``)
exports to ONNX::

    feats (F, n) float32   the stream's next n normalized feature frames (n >= 0)
    final () bool          true on the stream's last step
    state_in...            the previous step's state_out (zeros before the first)
        -> log_probs (m, V) float32   the output frames now complete (m >= 0)
           state_out...

Each stage reads its inputs through a window over the frames it has received:
a convolution of time kernel ``k``, stride ``s`` and padding ``k // 2`` keeps its
last ``k - 1`` input frames and the count of frames received (``recv``); its outputs
``[ready(recv), ready(recv + n))`` are the ones whose inputs have all arrived (on
the final step, all of them, the frames after the end being zeros, as the offline
convolution pads). ``k - 1`` frames are enough whatever ``n``, so every state has a
fixed shape and a step may take any number of frames. Each GRU layer keeps its
hidden state; the lookahead (row) convolution is a stage like the others. The
numbers are those of the offline forward pass (and of :mod:`asr.streaming`),
however the stream is cut (tests/test_export_stream.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.onnx.operators import shape_as_tensor

from asr.model import DeepSpeech2

__all__ = ["StreamStep", "initial_state", "state_names"]


def _ready(recv: Tensor, k: int, s: int, left: int) -> Tensor:
    """Outputs whose inputs have all arrived after ``recv`` frames, more to come."""
    reach = recv + left - k
    return torch.where(reach >= 0, reach.clamp(min=0) // s + 1, torch.zeros_like(recv))


def _outputs(recv: Tensor, k: int, s: int, left: int, right: int) -> Tensor:
    """Outputs of a whole input of ``recv`` frames (the offline count)."""
    reach = recv + left + right - k
    ok = (reach >= 0) & (recv > 0)
    return torch.where(ok, reach.clamp(min=0) // s + 1, torch.zeros_like(recv))


def _frames(x: Tensor) -> Tensor:
    """``x``'s last dimension as an int64 scalar tensor (dynamic in a graph)."""
    return shape_as_tensor(x)[-1]


def _take(x: Tensor, start: Tensor, count: Tensor) -> Tensor:
    """Frames ``[start, start + count)`` of ``x`` along the last dimension."""
    index = start + torch.arange(count.clamp(min=0), device=x.device)
    return x.index_select(-1, index)


def _window(
    ctx: Tensor, new: Tensor, recv: Tensor, final: Tensor, k: int, s: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The inputs of this step's outputs of a stage (kernel ``k``, stride ``s``,
    padding ``k // 2`` both sides), their count ``m``, the new context and count.

    Returns:
        ``(window, m, ctx_out, recv_out)``: ``window`` holds ``max(m - 1, 0) * s +
        k`` frames, whose stride-``s`` valid convolution gives ``max(m, 1)``
        outputs of which the first ``m`` are this step's.
    """
    left = right = k // 2
    n = _frames(new)
    recv_out = recv + n
    emitted = _ready(recv, k, s, left)
    total = torch.where(
        final, _outputs(recv_out, k, s, left, right), _ready(recv_out, k, s, left)
    )
    m = (total - emitted).clamp(min=0)
    seen = torch.cat([ctx, new], -1)  # input frames [recv - (k - 1), recv + n)
    # zeros after: the offline padding past the end, read only on the final step
    padded = torch.cat([seen, seen.new_zeros(*seen.shape[:-1], k)], -1)
    start = emitted * s - left - (recv - (k - 1))
    window = _take(padded, start, (m - 1).clamp(min=0) * s + k)
    ctx_out = _take(seen, _frames(seen) - (k - 1), torch.tensor(k - 1))
    return window, m, ctx_out, recv_out


class StreamStep(nn.Module):
    """``(feats (F, n), final, *state) -> (log_probs (m, V), *state)`` for a
    unidirectional GRU :class:`asr.model.DeepSpeech2` in eval mode (see the module
    docstring); :func:`state_names` and :func:`initial_state` describe the state."""

    def __init__(self, model: DeepSpeech2) -> None:
        super().__init__()
        c = model.config
        if c.bidirectional or model.lookahead is None or c.rnn_type != "gru":
            raise ValueError(
                "only a unidirectional GRU model with a lookahead streams "
                f"(bidirectional={c.bidirectional}, rnn_type={c.rnn_type!r})"
            )
        self.model = model

    def forward(self, feats: Tensor, final: Tensor, *state: Tensor) -> Any:
        model, c = self.model, self.model.config
        it = iter(state)
        out_state: list[Tensor] = []
        x = feats.unsqueeze(0)  # (F, n) -> (1, F, n): channels, frequency, time
        for spec, conv, norm in zip(c.conv, model.convs, model.conv_norms, strict=True):
            k, s = spec.kernel[1], spec.stride[1]
            ctx, recv = next(it), next(it)
            window, m, ctx, recv = _window(ctx, x, recv, final, k, s)
            y = F.conv2d(window.unsqueeze(0), conv.weight, None, conv.stride,
                         (conv.padding[0], 0))  # fmt: skip
            y = _take(y, torch.tensor(0), m)  # (1, C', F', m)
            x = norm(y, m.reshape(1)).clamp(0.0, c.clip)[0]
            out_state += [ctx, recv]
        # (C, F', m) -> (m, C, F') -> (m, C * F') -> (C * F', m): a flatten, which
        # keeps m dynamic in the graph (and allows m = 0), where a reshape would not
        x = x.permute(2, 0, 1).flatten(1).t()
        m = _frames(x)
        for i, (norm, rnn) in enumerate(zip(model.rnn_norms, model.rnns, strict=True)):
            h = next(it)  # (1, 1, H)
            if i:
                x = norm(x.unsqueeze(0), m.reshape(1))[0]
            # at least one frame through the GRU (a zero-length sequence is not a
            # sequence to onnxruntime); with none, the state passes unchanged
            seq = torch.cat([x, x.new_zeros(x.shape[0], 1)], -1)
            seq = _take(seq, torch.tensor(0), m.clamp(min=1)).t().unsqueeze(1)
            y, h_n = rnn(seq, h)  # (max(m, 1), 1, H)
            out_state.append(torch.where(m > 0, h_n, h))
            x = _take(y[:, 0].t(), torch.tensor(0), m)  # (H, m)
        look = model.lookahead
        k = look.context + 1
        ctx, recv = next(it), next(it)
        # the lookahead reads `context` frames ahead and none behind: a stage of
        # kernel k whose padding is all on the right, so its window starts k // 2
        # frames later than a centred one's
        window, m, ctx, recv = _lookahead_window(ctx, x, recv, final, k)
        y = F.conv1d(window.unsqueeze(0), look.conv.weight, None, groups=x.shape[0])
        y = _take(y, torch.tensor(0), m).clamp(0.0, c.clip)  # (1, H, m)
        y = model.out_norm(y, m.reshape(1))
        logits = model.fc(y[0].t())  # (H, m) -> (m, H) -> (m, V)
        out_state += [ctx, recv]
        return (logits.float().log_softmax(-1), *out_state)


def _lookahead_window(
    ctx: Tensor, new: Tensor, recv: Tensor, final: Tensor, k: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`_window` for a stride-1 stage padded ``k - 1`` on the right only."""
    n = _frames(new)
    recv_out = recv + n
    emitted = (recv - (k - 1)).clamp(min=0)
    total = torch.where(final, recv_out, (recv_out - (k - 1)).clamp(min=0))
    m = (total - emitted).clamp(min=0)
    seen = torch.cat([ctx, new], -1)  # frames [recv - (k - 1), recv + n)
    padded = torch.cat([seen, seen.new_zeros(*seen.shape[:-1], k)], -1)
    start = emitted - (recv - (k - 1))
    window = _take(padded, start, (m - 1).clamp(min=0) + k)
    ctx_out = _take(seen, _frames(seen) - (k - 1), torch.tensor(k - 1))
    return window, m, ctx_out, recv_out


def state_names(model: DeepSpeech2) -> list[str]:
    """The state tensors' names, in the graph's order (``_in``/``_out`` appended)."""
    names = []
    for i in range(len(model.config.conv)):
        names += [f"conv{i}_context", f"conv{i}_frames"]
    names += [f"gru{i}_hidden" for i in range(len(model.rnns))]
    return names + ["lookahead_context", "lookahead_frames"]


def initial_state(model: DeepSpeech2) -> list[Tensor]:
    """A new stream's state: zero contexts (the offline left padding), zero counts
    and hidden states."""
    c = model.config
    state = []
    channels, freq = 1, c.n_features
    for spec, conv in zip(c.conv, model.convs, strict=True):
        state += [
            torch.zeros(channels, freq, spec.kernel[1] - 1),
            torch.zeros((), dtype=torch.int64),
        ]
        kf = spec.kernel[0]
        freq = (freq + 2 * (kf // 2) - kf) // spec.stride[0] + 1
        channels = conv.out_channels
    state += [torch.zeros(1, 1, c.hidden_size) for _ in model.rnns]
    state += [
        torch.zeros(c.hidden_size, c.lookahead),
        torch.zeros((), dtype=torch.int64),
    ]
    return state
