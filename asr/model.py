"""DeepSpeech2 (Amodei et al., 2016): 2-D convolutions, recurrent layers with
sequence-wise batch norm, and a linear layer to the vocabulary.

Every layer respects the lengths that travel with the tensors: padding is zeroed before
each convolution, excluded from batch-norm statistics and skipped by the recurrent
layers (packed sequences), so a padded batch gives, in eval mode, the same outputs as
each utterance alone, and the output lengths are exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr.gru import gru_layer, reverse_padded

__all__ = ["ConvSpec", "DeepSpeech2", "ModelConfig", "PRESETS", "count_parameters"]


@dataclass(frozen=True)
class ConvSpec:
    """One 2-D convolution over (frequency, time): kernel, stride and output channels.

    Padding is half the kernel on each side, so the output length in time is
    ``(T - 1) // stride_t + 1`` exactly.
    """

    channels: int = 32
    kernel: tuple[int, int] = (41, 11)  # (frequency bins, frames)
    stride: tuple[int, int] = (2, 2)


@dataclass(frozen=True)
class ModelConfig:
    """The hyper-parameters of a DeepSpeech2 model; saved inside every checkpoint.

    Attributes:
        n_features: frequency bins of the input features (161 for DS2's spectrogram).
        vocab_size: output classes, blank included.
        conv: the convolution stack, in order.
        rnn_type: ``"gru"`` or ``"lstm"``.
        rnn_layers, hidden_size: the recurrent stack.
        bidirectional: bidirectional layers (sum of both directions, as in
            deepspeech.pytorch), or unidirectional ones followed by a lookahead
            (row) convolution over ``lookahead`` future frames (DS2 paper, sec. 3.5).
        dropout: between recurrent layers.
        clip: the clipped-ReLU ceiling, ``min(max(x, 0), clip)`` (DS2 uses 20).
    """

    n_features: int = 161
    vocab_size: int = 29
    conv: tuple[ConvSpec, ...] = field(
        default_factory=lambda: (
            ConvSpec(32, (41, 11), (2, 2)),
            ConvSpec(32, (21, 11), (2, 1)),
        )
    )
    rnn_type: str = "gru"
    rnn_layers: int = 5
    hidden_size: int = 800
    bidirectional: bool = True
    lookahead: int = 20
    dropout: float = 0.0
    clip: float = 20.0

    def __post_init__(self) -> None:
        if self.rnn_type not in ("gru", "lstm"):
            raise ValueError(f"rnn_type must be 'gru' or 'lstm', got {self.rnn_type!r}")
        conv = tuple(c if isinstance(c, ConvSpec) else _conv_spec(c) for c in self.conv)
        object.__setattr__(self, "conv", conv)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (lists, not tuples) for checkpoints."""
        d = asdict(self)
        d["conv"] = [
            {"channels": c.channels, "kernel": list(c.kernel), "stride": list(c.stride)}
            for c in self.conv
        ]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**{**d, "conv": tuple(_conv_spec(c) for c in d["conv"])})

    def output_lengths(self, lens: Tensor) -> Tensor:
        """Exact frames out of the conv stack for ``lens`` input frames."""
        for spec in self.conv:
            lens = _conv_frames(lens, spec)
        return lens

    def frame_stride(self) -> int:
        """Input (feature) frames per output frame: the product of the time strides."""
        stride = 1
        for spec in self.conv:
            stride *= spec.stride[1]
        return stride


def _conv_spec(c: Any) -> ConvSpec:
    if isinstance(c, ConvSpec):
        return c
    return ConvSpec(int(c["channels"]), tuple(c["kernel"]), tuple(c["stride"]))


# Presets (their parameter counts are printed by `asr model-info` and in the README).
PRESETS: dict[str, dict[str, Any]] = {
    # The DS2 paper's English model (sec. 3, table 4): 3 conv layers, 7 bidirectional
    # GRU layers of 1280 units (here summed directions).
    "paper": {
        "conv": [
            {"channels": 32, "kernel": [41, 11], "stride": [2, 2]},
            {"channels": 32, "kernel": [21, 11], "stride": [2, 1]},
            {"channels": 96, "kernel": [21, 11], "stride": [2, 1]},
        ],
        "rnn_type": "gru",
        "rnn_layers": 7,
        "hidden_size": 1280,
    },
    # deepspeech.pytorch's LibriSpeech model: 2 conv layers, 5 bi-LSTM of 1024.
    "librispeech": {"rnn_type": "lstm", "rnn_layers": 5, "hidden_size": 1024},
    # A few million parameters: trains on CPU in minutes on the synthetic corpus.
    "small": {
        "conv": [
            {"channels": 32, "kernel": [41, 11], "stride": [2, 2]},
            {"channels": 32, "kernel": [21, 11], "stride": [2, 1]},
        ],
        "rnn_type": "gru",
        "rnn_layers": 3,
        "hidden_size": 320,
    },
    # For tests: runs in milliseconds.
    "tiny": {
        "conv": [{"channels": 4, "kernel": [11, 5], "stride": [4, 2]}],
        "rnn_type": "gru",
        "rnn_layers": 1,
        "hidden_size": 16,
    },
}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_frames(lens: Tensor, spec: ConvSpec) -> Tensor:
    """Frames out of one convolution (half-kernel padding) for ``lens`` frames in."""
    kt, st = spec.kernel[1], spec.stride[1]
    return torch.div(lens + 2 * (kt // 2) - kt, st, rounding_mode="floor") + 1


def _time_mask(lens: Tensor, T: int) -> Tensor:
    """``(B, T)`` bool, True on valid frames."""
    return torch.arange(T, device=lens.device)[None, :] < lens[:, None]


class MaskedBatchNorm(nn.BatchNorm1d):
    """Batch norm whose statistics use valid frames only (sequence-wise BN, DS2 3.2).

    Input ``(B, C, *, T)`` with ``lens`` ``(B,)``: statistics per channel over the
    batch, any middle dimensions and the valid frames; padded frames come out as 0.
    """

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:  # type: ignore[override]
        mask = _time_mask(lens, x.shape[-1])  # (B, T)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        m = mask.view(shape).to(x.dtype)  # (B, 1, *1, T)
        if self.training:
            dims = [0] + list(range(2, x.dim()))
            count = (m.sum() * (x[0, 0].numel() / x.shape[-1])).clamp(min=1)
            mean = (x * m).sum(dims) / count  # (C,)
            centered = x - mean.view(1, -1, *([1] * (x.dim() - 2)))
            var = (centered.square() * m).sum(dims) / count
            with torch.no_grad():
                self.num_batches_tracked += 1
                mom = self.momentum if self.momentum is not None else 0.1
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean), mom)
                self.running_var.lerp_(unbiased.detach().to(self.running_var), mom)
        else:
            mean, var = self.running_mean.to(x.dtype), self.running_var.to(x.dtype)
        view = (1, -1) + (1,) * (x.dim() - 2)
        y = (x - mean.view(view)) * torch.rsqrt(var.view(view) + self.eps)
        if self.affine:
            y = y * self.weight.view(view) + self.bias.view(view)
        return y * m


class Lookahead(nn.Module):
    """Row convolution over ``context`` future frames (DS2 sec. 3.5), per feature."""

    def __init__(self, features: int, context: int) -> None:
        super().__init__()
        self.context = context
        self.conv = nn.Conv1d(
            features, features, context + 1, groups=features, bias=False
        )

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        """``x``: ``(B, H, T)`` with zeros past ``lens``; returns the same shape."""
        x = nn.functional.pad(x, (0, self.context))  # future frames past the end: 0
        return self.conv(x) * _time_mask(lens, x.shape[-1] - self.context)[:, None]


class DeepSpeech2(nn.Module):
    """``(feats (B, F, T), feat_lens (B,))`` -> ``(log_probs (T', B, V), out_lens)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        convs, norms = [], []
        in_ch, freq = 1, c.n_features
        for spec in c.conv:
            kf, kt = spec.kernel
            convs.append(
                nn.Conv2d(
                    in_ch,
                    spec.channels,
                    spec.kernel,
                    spec.stride,
                    padding=(kf // 2, kt // 2),
                    bias=False,
                )
            )
            norms.append(MaskedBatchNorm(spec.channels))
            freq = (freq + 2 * (kf // 2) - kf) // spec.stride[0] + 1
            in_ch = spec.channels
        if freq < 1:
            raise ValueError(
                f"the convolutions leave no frequency bins from {c.n_features} features"
            )
        self.convs, self.conv_norms = nn.ModuleList(convs), nn.ModuleList(norms)
        rnn_cls = nn.GRU if c.rnn_type == "gru" else nn.LSTM
        self.rnns = nn.ModuleList()
        self.rnn_norms = nn.ModuleList()
        size = in_ch * freq
        for i in range(c.rnn_layers):
            # DS2 / deepspeech.pytorch: sequence-wise BN on the input of every
            # recurrent layer but the first (the conv stack already normalises it).
            self.rnn_norms.append(MaskedBatchNorm(size) if i else nn.Identity())
            self.rnns.append(
                rnn_cls(size, c.hidden_size, bidirectional=c.bidirectional, bias=True)
            )
            size = c.hidden_size
        self.dropout = nn.Dropout(c.dropout)
        self.lookahead = None if c.bidirectional else Lookahead(size, c.lookahead)
        self.out_norm = MaskedBatchNorm(size)
        self.fc = nn.Linear(size, c.vocab_size, bias=False)
        # Training GRU layers on the CPU run through asr.gru (False: torch's nn.GRU on
        # a packed batch, which inference always uses: without autograd it is as fast).
        self.fast_gru = True
        # False: the recurrent layers run on the padded batch (see _rnn_padded), the
        # form graph exporters and runtimes outside PyTorch can take.
        self.packed = True

    def output_lengths(self, lens: Tensor) -> Tensor:
        """Exact frames out of the conv stack for ``lens`` input frames."""
        return self.config.output_lengths(lens)

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probabilities over the vocabulary.

        Args:
            feats: ``(B, F, T)`` normalised features, zero past ``feat_lens``.
            feat_lens: ``(B,)`` valid frames.

        Returns:
            ``log_probs`` ``(T', B, V)`` float32 (as CTC losses take them) and
            ``out_lens`` ``(B,)`` with ``T' = max(out_lens)``.
        """
        log_probs, lens, _ = self.forward_with_hidden(feats, feat_lens, None)
        return log_probs, lens

    def forward_with_hidden(
        self, feats: Tensor, feat_lens: Tensor, layer: int | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`forward`, plus the output of recurrent layer ``layer`` (an index
        into the stack, negative from the end) as ``(B, H, T')``, zero past
        ``out_lens``; None when ``layer`` is None. Auxiliary training targets (frame
        phones) read it."""
        lens = feat_lens
        x = feats.unsqueeze(1)  # (B, F, T) -> (B, 1, F, T)
        for conv, norm, spec in zip(
            self.convs, self.conv_norms, self.config.conv, strict=True
        ):
            x = x * _time_mask(lens, x.shape[-1])[:, None, None]  # padding is zero
            x = conv(x)
            lens = _conv_frames(lens, spec)
            x = norm(x, lens).clamp(0.0, self.config.clip)  # clipped ReLU
        B, Ch, Fr, T = x.shape
        x = x.reshape(B, Ch * Fr, T)  # (B, C, F', T) -> (B, C*F', T)
        keep = None if layer is None else layer % len(self.rnns)
        hidden = None
        for i, (norm, rnn) in enumerate(zip(self.rnn_norms, self.rnns, strict=True)):
            x = norm(x, lens) if i else x
            if i:
                x = self.dropout(x)
            x = self._rnn(rnn, x, lens)
            if i == keep:
                hidden = x
        if self.lookahead is not None:
            x = self.lookahead(x, lens).clamp(0.0, self.config.clip)
        x = self.out_norm(x, lens)
        logits = self.fc(x.transpose(1, 2))  # (B, H, T) -> (B, T, H) -> (B, T, V)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # -> (T, B, V)
        return log_probs, lens, hidden

    def frame_stride(self) -> int:
        """Input (feature) frames per output frame: the product of the time strides."""
        return self.config.frame_stride()

    def _rnn(self, rnn: nn.RNNBase, x: Tensor, lens: Tensor) -> Tensor:
        """``(B, H_in, T)`` -> ``(B, H, T)``, directions summed, zero past ``lens``."""
        T = x.shape[-1]
        seq = x.permute(2, 0, 1)  # (B, H_in, T) -> (T, B, H_in)
        if not self.packed:
            out = _rnn_padded(rnn, seq, lens)
        elif (
            isinstance(rnn, nn.GRU)
            and seq.device.type == "cpu"
            and self.fast_gru
            and torch.is_grad_enabled()
        ):
            out = gru_layer(rnn, seq, lens)  # the same function, trains faster
        else:  # inference (no autograd to save), cuDNN on CUDA, LSTM
            # In float32 with autocast off, whatever the caller's autocast: torch's
            # autocast wrapper of cuDNN RNNs casts weights and inputs to fp16 even
            # under a bf16 autocast (pytorch#42385), and without a gradient scaler
            # (bf16-mixed has none) the small recurrent gradients of a per-token mean
            # loss underflow there silently. asr.gru (the CPU training path above)
            # chooses its own dtypes: bf16 products, float32 state.
            weights = next(rnn.parameters()).dtype  # float32 (float64 in tests)
            packed = pack_padded_sequence(
                seq.to(weights), lens.clamp(min=1).cpu(), enforce_sorted=False
            )
            with torch.autocast(seq.device.type, enabled=False):
                out, _ = rnn(packed)
            out, _ = pad_packed_sequence(out, total_length=T)  # (T, B, D*H)
        if rnn.bidirectional:
            fwd, bwd = out.chunk(2, dim=-1)
            out = fwd + bwd
        out = out * _time_mask(lens, T).t()[:, :, None]  # zero-length rows: 0
        return out.permute(1, 2, 0)  # (T, B, H) -> (B, H, T)


def _rnn_padded(rnn: nn.RNNBase, seq: Tensor, lens: Tensor) -> Tensor:
    """One layer of ``rnn`` over the padded ``seq`` ``(T, B, I)``: ``(T, B, D*H)``,
    equal to the packed batch's outputs before ``lens`` (unspecified after).

    No packed sequences: ONNX has no operator for them (torch's exporter silently
    drops a packed RNN from the graph), and a graph must take any batch. The forward
    direction's padding comes after its valid frames and cannot reach them; the
    backward direction runs, as a one-direction RNN with the reverse weights, on each
    sequence reversed within its own length (as :func:`asr.gru.gru_layer` does), so
    it starts from each utterance's last valid frame, not from the batch's padding.
    """
    names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    run = torch._VF.gru if isinstance(rnn, nn.GRU) else torch._VF.lstm
    B, H = seq.shape[1], rnn.hidden_size
    h0 = seq.new_zeros(1, B, H)
    hx = h0 if isinstance(rnn, nn.GRU) else (h0, h0)
    outs = []
    for suffix in ["", "_reverse"][: 2 if rnn.bidirectional else 1]:
        params = [getattr(rnn, name + suffix) for name in names]
        x = reverse_padded(seq, lens) if suffix else seq
        out = run(x, hx, params, True, 1, 0.0, False, False, False)[0]
        outs.append(reverse_padded(out, lens) if suffix else out)
    return torch.cat(outs, -1)
