"""CRNN (Shi, Bai & Yao, 2015, "An End-to-End Trainable Neural Network for Image-based
Sequence Recognition"): convolutions that collapse the image's height into a sequence
of feature columns, a deep bidirectional LSTM over the width, and a linear layer to
the characters and the CTC blank.

Compact by design: the targets here are a CAPTCHA or a line of a few words at a
height of 32 pixels, trained on 2 CPU cores in minutes, so four 3x3 convolution
blocks (32-64-128-128 channels by default) and two LSTM layers of 128 per direction
instead of the paper's VGG and 256. Pooling halves the width twice (one output frame
per 4 input columns, enough for CTC: a 96-pixel CAPTCHA gives 24 frames for at most 6
characters and their repeats) and the height down to ``height / 16`` rows, which are
flattened into the LSTM's input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CRNN", "CRNNConfig", "count_parameters"]


@dataclass(frozen=True)
class CRNNConfig:
    """The CRNN's hyper-parameters (saved in the checkpoint).

    Attributes:
        height: input image height in pixels (a multiple of 16).
        channels: output channels of the four convolution blocks.
        hidden_size: LSTM units per direction.
        rnn_layers: stacked bidirectional LSTM layers.
        dropout: between the LSTM layers and before the output layer.
        vocab_size: output classes, the blank included.
    """

    height: int = 32
    channels: tuple[int, ...] = (32, 64, 128, 128)
    hidden_size: int = 128
    rnn_layers: int = 2
    dropout: float = 0.1
    vocab_size: int = 37

    def __post_init__(self) -> None:
        if self.height < 16 or self.height % 16:
            raise ValueError(f"height must be a multiple of 16, got {self.height}")
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise ValueError(f"channels must be 4 positive ints, got {self.channels}")
        if self.hidden_size < 1 or self.rnn_layers < 1 or self.vocab_size < 2:
            raise ValueError(f"invalid CRNN sizes: {self}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CRNNConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown CRNN settings: {', '.join(unknown)}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(int(c) for c in d["channels"])
        return cls(**d)


# Width stride of the convolutions: pooling halves the width in the first two blocks.
WIDTH_STRIDE = 4


def _block(c_in: int, c_out: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(pool, pool),
    )


class CRNN(nn.Module):
    """Images ``(B, 1, H, W)`` -> log-probabilities ``(T, B, V)``, ``T = W // 4``."""

    def __init__(self, config: CRNNConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        # Blocks 1-2 pool 2x2, blocks 3-4 pool only the height (2x1), as in CRNN:
        # the width keeps the resolution the characters need.
        self.cnn = nn.Sequential(
            _block(1, c[0], (2, 2)),
            _block(c[0], c[1], (2, 2)),
            _block(c[1], c[2], (2, 1)),
            _block(c[2], c[3], (2, 1)),
        )
        rows = config.height // 16
        self.rnn = nn.LSTM(
            c[3] * rows,
            config.hidden_size,
            num_layers=config.rnn_layers,
            bidirectional=True,
            dropout=config.dropout if config.rnn_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(2 * config.hidden_size, config.vocab_size)

    @staticmethod
    def output_lengths(widths: Tensor) -> Tensor:
        """``(B,)`` image widths in pixels -> ``(B,)`` output frames."""
        return torch.div(widths, WIDTH_STRIDE, rounding_mode="floor")

    def forward(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        """Read a batch of images.

        Args:
            images: ``(B, 1, H, W)`` float, ink high and background (and padding) 0,
                ``H = config.height``.
            widths: ``(B,)`` valid width of each image in pixels (the rest padding).

        Returns:
            ``(log_probs (T, B, V), out_lens (B,))`` with ``T = W // 4``.
        """
        if images.shape[2] != self.config.height:
            raise ValueError(
                f"images must be {self.config.height} pixels high, got "
                f"{tuple(images.shape)}"
            )
        x = self.cnn(images)  # (B, C, H/16, W/4)
        B, C, R, T = x.shape
        x = x.reshape(B, C * R, T).permute(2, 0, 1)  # (B, C*R, T) -> (T, B, C*R)
        out_lens = self.output_lengths(widths).clamp(min=1, max=T)
        if bool((out_lens == T).all()):  # no padding (CAPTCHAs: one width)
            y, _ = self.rnn(x)  # (T, B, 2H)
        else:
            # Packed, so the backward direction starts at each image's own last
            # column, not in the padding. (Packing costs a matrix product per
            # distinct length: only where widths differ.)
            packed = nn.utils.rnn.pack_padded_sequence(
                x, out_lens.cpu(), enforce_sorted=False
            )
            y, _ = self.rnn(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, total_length=T)  # (T, B, 2H)
        logits = self.out(self.dropout(y))  # (T, B, V)
        return logits.float().log_softmax(-1), out_lens


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
