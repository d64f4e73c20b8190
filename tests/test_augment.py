"""SpecAugment masks and speed perturbation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asr.augment import SpecAugment, SpeedPerturb, speed_perturb

# -- SpecAugment ----------------------------------------------------------------------


def _batch(
    B: int = 8, F: int = 80, T: int = 300, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with no zeros anywhere (padding included) and varied lengths."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.rand(B, F, T, generator=g) + 1.0
    feat_lens = torch.randint(1, T + 1, (B,), generator=g)
    feat_lens[0] = T
    return feats, feat_lens


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, width) of the runs of True in a 1-D bool tensor."""
    runs, start = [], None
    for i, m in enumerate([*mask.tolist(), False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def _decompose(
    masked: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked cells of one utterance ``(F, T)`` with ``n`` valid frames.

    Returns the zero cells, the channels zero across all valid frames, and the
    frames zero across all channels.
    """
    zero = masked == 0
    rows = zero[:, :n].all(dim=1)  # (F,)
    cols = zero.all(dim=0)  # (T,)
    return zero, rows, cols


def test_eval_mode_is_identity() -> None:
    feats, feat_lens = _batch()
    augment = SpecAugment().eval()
    out, out_lens = augment(feats, feat_lens)
    assert out is feats and out_lens is feat_lens


def test_masks_are_bands_and_blocks_within_lengths() -> None:
    feats, feat_lens = _batch(B=32)
    augment = SpecAugment(freq_masks=1, freq_width=10, time_masks=1, time_width=0.2)
    torch.manual_seed(0)
    out, out_lens = augment.train()(feats, feat_lens)
    assert out_lens is feat_lens and out.shape == feats.shape
    assert not torch.equal(out, feats)
    for b, n in enumerate(feat_lens.tolist()):
        zero, rows, cols = _decompose(out[b], n)
        # Every zero is a masked channel or a masked frame, within valid frames, ...
        valid = torch.arange(out.shape[-1]) < n
        assert torch.equal(zero, (rows[:, None] | cols[None, :]) & valid)
        # ... frames past the length are untouched, ...
        assert torch.equal(out[b, :, n:], feats[b, :, n:])
        # ... one band of at most 10 channels, one block of at most 20% of n frames.
        assert len(_runs(rows)) <= 1 and rows.sum() <= 10
        assert len(_runs(cols)) <= 1 and cols.sum() <= math.floor(0.2 * n)
        # Unmasked cells keep their values.
        assert torch.equal(out[b][~zero], feats[b][~zero])


def test_default_policy_bounds() -> None:
    """Two masks of each kind: at most two runs, each at most twice the width."""
    feats, feat_lens = _batch(B=64, F=80, T=400)
    torch.manual_seed(1)
    out, _ = SpecAugment().train()(feats, feat_lens)
    for b, n in enumerate(feat_lens.tolist()):
        _, rows, cols = _decompose(out[b], n)
        assert len(_runs(rows)) <= 2 and rows.sum() <= 2 * 27
        assert len(_runs(cols)) <= 2 and cols.sum() <= 2 * math.floor(0.05 * n)
        assert not cols[n:].any()


def test_widths_cover_their_whole_range() -> None:
    """Widths are uniform on 0..max inclusive: all values occur, nothing beyond."""
    B, F, T = 3000, 12, 200
    feats = torch.ones(B, F, T)
    feat_lens = torch.full((B,), 100)
    feat_lens[::2] = 200
    augment = SpecAugment(freq_masks=1, freq_width=5, time_masks=1, time_width=0.05)
    torch.manual_seed(6)
    out, _ = augment.train()(feats, feat_lens)
    zero = out == 0
    freq_widths = zero[:, :, :100].all(dim=2).sum(dim=1)  # over valid frames
    time_widths = zero.all(dim=1).sum(dim=1)  # frames masked over all channels
    assert set(freq_widths.tolist()) == set(range(6))
    assert set(time_widths[1::2].tolist()) == set(range(6))  # floor(0.05 * 100) = 5
    assert set(time_widths[::2].tolist()) == set(range(11))  # floor(0.05 * 200) = 10
    # Starts are uniform too: every channel gets masked sometimes.
    assert zero[:, :, :100].all(dim=2).any(dim=0).all()
    # Mean width of U{0..5} is 2.5, of U{0..10} 5: no mask falls off the end.
    assert abs(freq_widths.float().mean().item() - 2.5) < 0.15
    assert abs(time_widths[1::2].float().mean().item() - 2.5) < 0.2
    assert abs(time_widths[::2].float().mean().item() - 5.0) < 0.3


def test_int_time_width_is_frames_and_clipped() -> None:
    feats, _ = _batch(B=200, F=10, T=60)
    feat_lens = torch.full((200,), 60)
    feat_lens[:100] = 3
    augment = SpecAugment(freq_masks=0, time_masks=1, time_width=8)
    torch.manual_seed(2)
    out, _ = augment.train()(feats, feat_lens)
    widths = (out == 0).all(dim=1).sum(dim=1)
    assert widths[:100].max() <= 3 and widths[100:].max() == 8


def test_freq_width_clipped_to_channels() -> None:
    feats = torch.ones(2000, 4, 10)
    augment = SpecAugment(freq_masks=1, freq_width=27, time_masks=0)
    torch.manual_seed(3)
    out, _ = augment.train()(feats, torch.full((2000,), 10))
    widths = (out == 0).all(dim=2).sum(dim=1)
    counts = torch.bincount(widths, minlength=5)
    assert counts.numel() == 5 and (counts > 300).all()  # U{0..4}: 400 each


def test_seeded_reproducibility() -> None:
    feats, feat_lens = _batch()
    augment = SpecAugment().train()
    torch.manual_seed(7)
    a, _ = augment(feats, feat_lens)
    torch.manual_seed(7)
    b, _ = augment(feats, feat_lens)
    c, _ = augment(feats, feat_lens)
    assert torch.equal(a, b) and not torch.equal(a, c)

    def with_generator(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return SpecAugment(generator=g).train()(feats, feat_lens)[0]

    torch.manual_seed(0)
    x = with_generator(11)
    torch.manual_seed(1)  # the global RNG plays no part
    assert torch.equal(x, with_generator(11))
    assert not torch.equal(x, with_generator(12))


def test_mask_value_and_zero_lengths() -> None:
    feats, feat_lens = _batch(B=4)
    feat_lens[1] = 0
    augment = SpecAugment(time_width=0.5, mask_value=-1.0)
    torch.manual_seed(4)
    out, _ = augment.train()(feats, feat_lens)
    assert torch.equal(out[1], feats[1])  # nothing valid, nothing masked
    assert ((out == -1.0) | (out == feats)).all() and (out == -1.0).any()


def test_gradient_flows_through_unmasked_cells() -> None:
    feats, feat_lens = _batch(B=2)
    feats.requires_grad_(True)
    torch.manual_seed(5)
    out, _ = SpecAugment().train()(feats, feat_lens)
    out.sum().backward()
    assert torch.equal(feats.grad, (out != 0).float())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="time_width"):
        SpecAugment(time_width=1.5)
    with pytest.raises(ValueError, match="freq_masks"):
        SpecAugment(freq_masks=-1)
    with pytest.raises(ValueError, match=r"\(B, F, T\)"):
        SpecAugment().train()(torch.ones(3, 4), torch.tensor([4, 4, 4]))


# -- speed perturbation ---------------------------------------------------------------


def _peak_hz(wave: torch.Tensor, sample_rate: int) -> float:
    """Frequency of the strongest spectral peak, refined by parabolic interpolation."""
    x = wave.double().numpy() * np.hanning(wave.numel())
    n = 8 * wave.numel()
    mag = np.log(np.abs(np.fft.rfft(x, n=n)) + 1e-30)
    k = int(np.argmax(mag))
    a, b, c = mag[k - 1 : k + 2]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sample_rate / n


@pytest.mark.parametrize("factor", [0.9, 1.0, 1.1, 0.95, 1.25])
def test_speed_perturb_length_and_pitch(factor: float) -> None:
    sr = 16000
    t = torch.arange(sr) / sr
    tone = 0.5 * torch.sin(2 * math.pi * 440 * t)
    out = speed_perturb(tone, sr, factor)
    assert out.dtype == tone.dtype and out.dim() == 1
    assert out.numel() == math.ceil(sr / factor)
    assert abs(_peak_hz(out, sr) - 440 * factor) < 0.5
    # Amplitude is preserved away from the edges (no gain change).
    mid = out[500:-500]
    assert abs(mid.abs().max().item() - 0.5) < 0.01


def test_speed_perturb_batched_and_identity() -> None:
    waves = torch.randn(3, 8000)
    assert speed_perturb(waves, 16000, 1.0) is waves
    out = speed_perturb(waves, 16000, 1.1)
    assert out.shape == (3, math.ceil(8000 / 1.1))
    torch.testing.assert_close(out[1], speed_perturb(waves[1], 16000, 1.1))
    with pytest.raises(ValueError, match="positive"):
        speed_perturb(waves, 16000, 0.0)


def test_speed_perturb_does_not_alias() -> None:
    """Speeding up a 7.5 kHz tone by 1.1 would put it above Nyquist: it must vanish."""
    sr = 16000
    tone = torch.sin(2 * math.pi * 7500 * torch.arange(sr) / sr)
    out = speed_perturb(tone, sr, 1.1)
    assert out[1000:-1000].abs().max() < 0.01


def test_speed_perturb_class_seeded() -> None:
    wave = torch.randn(16000)
    lengths = {math.ceil(16000 / f): f for f in (0.9, 1.0, 1.1)}

    def draws(seed: int) -> list[float]:
        sp = SpeedPerturb(16000, seed=seed)
        return [lengths[sp(wave).numel()] for _ in range(60)]

    first = draws(3)
    assert draws(3) == first and draws(4) != first
    assert set(first) == {0.9, 1.0, 1.1}
    # Without a seed: torch's global RNG.
    sp = SpeedPerturb(16000, factors=(0.8, 1.2))
    torch.manual_seed(0)
    a = [sp.choose() for _ in range(20)]
    torch.manual_seed(0)
    assert [sp.choose() for _ in range(20)] == a and set(a) == {0.8, 1.2}
    with pytest.raises(ValueError, match="positive"):
        SpeedPerturb(factors=(0.9, -1.0))


class _Waves(torch.utils.data.Dataset):
    def __init__(self, perturb: SpeedPerturb) -> None:
        self.perturb = perturb

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> float:
        return self.perturb.choose()


def test_speed_perturb_workers_differ() -> None:
    """A seeded perturber must not give every DataLoader worker the same draws."""
    loader = torch.utils.data.DataLoader(
        _Waves(SpeedPerturb(seed=0, factors=tuple(range(1, 100)))),
        batch_size=4,
        num_workers=2,
    )
    torch.manual_seed(0)
    first, second = [batch.tolist() for batch in loader]
    assert first != second
