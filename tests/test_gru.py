"""asr.gru: the CPU GRU layer computes exactly what torch.nn.GRU computes."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr.gru import _GRURecurrence, gru_layer, reverse_padded
from asr.model import DeepSpeech2, ModelConfig


def _torch_gru(rnn: torch.nn.GRU, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    packed = pack_padded_sequence(x, lens, enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    return out


def _mask(lens: torch.Tensor, T: int) -> torch.Tensor:
    return (torch.arange(T)[:, None] < lens)[:, :, None]


@pytest.mark.parametrize("bidirectional", [True, False])
def test_matches_torch_gru_outputs_and_gradients(bidirectional: bool) -> None:
    torch.manual_seed(0)
    T, B, F, H = 17, 6, 9, 7
    rnn = torch.nn.GRU(F, H, bidirectional=bidirectional).double()
    x = torch.randn(T, B, F, dtype=torch.double, requires_grad=True)
    lens = torch.tensor([17, 9, 1, 17, 4, 12])  # unsorted, full, length one
    mask = _mask(lens, T)
    ours = gru_layer(rnn, x, lens) * mask
    theirs = _torch_gru(rnn, x, lens) * mask
    assert ours.shape == theirs.shape == (T, B, H * (2 if bidirectional else 1))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    weights = torch.randn_like(ours)
    wrt = [x, *rnn.parameters()]
    g_ours = torch.autograd.grad((ours * weights).sum(), wrt)
    g_theirs = torch.autograd.grad((theirs * weights).sum(), wrt)
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_padding_never_reaches_valid_frames() -> None:
    torch.manual_seed(1)
    rnn = torch.nn.GRU(5, 4, bidirectional=True).double()
    x = torch.randn(10, 3, 5, dtype=torch.double)
    lens = torch.tensor([10, 6, 3])
    noisy = x.clone()
    noisy[6:, 1] = 1e3  # garbage in the padding of utterance 1 and 2
    noisy[3:, 2] = -1e3
    mask = _mask(lens, 10)
    torch.testing.assert_close(
        gru_layer(rnn, x, lens) * mask, gru_layer(rnn, noisy, lens) * mask
    )


def test_recurrence_gradcheck() -> None:
    torch.manual_seed(2)
    D, T, B, H = 2, 5, 3, 4
    gi = torch.randn(T, D, B, 3 * H, dtype=torch.double, requires_grad=True)
    w = torch.randn(D, 3 * H, H, dtype=torch.double, requires_grad=True)
    b = torch.randn(D, 3 * H, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_GRURecurrence.apply, (gi, w, b))


def test_reverse_padded_reverses_within_lengths_and_is_an_involution() -> None:
    x = torch.arange(12.0).view(4, 3)  # (T, B)
    lens = torch.tensor([4, 2, 1])
    r = reverse_padded(x, lens)
    assert r[:, 0].tolist() == [9.0, 6.0, 3.0, 0.0]
    assert r[:, 1].tolist() == [4.0, 1.0, 7.0, 10.0]  # padding stays in place
    assert r[:, 2].tolist() == [2.0, 5.0, 8.0, 11.0]
    torch.testing.assert_close(reverse_padded(r, lens), x)


def _model(bidirectional: bool = True) -> DeepSpeech2:
    torch.manual_seed(3)
    config = ModelConfig(
        n_features=16,
        conv=({"channels": 4, "kernel": [5, 5], "stride": [2, 2]},),
        rnn_layers=2,
        hidden_size=12,
        bidirectional=bidirectional,
        lookahead=3,
    )
    return DeepSpeech2(config)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_model_same_with_either_gru(bidirectional: bool) -> None:
    model = _model(bidirectional).double().train()
    feats = torch.randn(3, 16, 40, dtype=torch.double)
    lens = torch.tensor([40, 23, 31])
    results = []
    for fast in (True, False):
        model.fast_gru = fast
        model.zero_grad()
        log_probs, out_lens = model(feats, lens)
        log_probs[:, :, 1].sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((log_probs.detach(), out_lens, grads))
    (a, la, ga), (b, lb, gb) = results
    assert torch.equal(la, lb)
    for i, n in enumerate(la.tolist()):  # valid frames only
        torch.testing.assert_close(a[:n, i], b[:n, i], rtol=0, atol=1e-10)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-9)


def test_bfloat16_autocast_close_to_float32() -> None:
    """Under CPU autocast the recurrent products run in bfloat16 (as every other
    product does); outputs and gradients stay close to float32 and finite."""
    model = _model().train()
    feats = torch.randn(4, 16, 60)
    lens = torch.tensor([60, 44, 52, 30])
    model.zero_grad()
    ref, out_lens = model(feats, lens)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = model(feats, lens)
    low.float().sum().backward()
    for i, n in enumerate(out_lens.tolist()):
        torch.testing.assert_close(low[:n, i].float(), ref[:n, i], rtol=0, atol=0.1)
    for p, g in zip(model.parameters(), ref_grads, strict=True):
        assert torch.isfinite(p.grad).all()
        scale = g.abs().max().clamp(min=1e-3)
        assert (p.grad - g).abs().max() / scale < 0.1


def test_state_dict_unchanged() -> None:
    """The layer reads nn.GRU's own parameters: checkpoints are interchangeable."""
    model = _model()
    names = {n for n, _ in model.named_parameters() if n.startswith("rnns.")}
    assert "rnns.0.weight_hh_l0_reverse" in names
    assert "rnns.1.bias_ih_l0" in names
