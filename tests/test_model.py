"""DeepSpeech2: exact output lengths, no leaking padding, presets build, it learns."""

from __future__ import annotations

import pytest
import torch

from asr.model import PRESETS, DeepSpeech2, ModelConfig, count_parameters


def make(preset: str = "tiny", **overrides) -> DeepSpeech2:
    base = ModelConfig().to_dict()
    return DeepSpeech2(ModelConfig.from_dict({**base, **PRESETS[preset], **overrides}))


def padded_batch(lens: list[int], F: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lens), F, max(lens), generator=g)
    for i, n in enumerate(lens):
        x[i, :, n:] = 0
    return x, torch.tensor(lens)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"rnn_type": "lstm"},
        {"bidirectional": False, "lookahead": 3},
        {
            "conv": [
                {"channels": 4, "kernel": [11, 11], "stride": [2, 2]},
                {"channels": 4, "kernel": [5, 5], "stride": [2, 1]},
            ],
            "rnn_layers": 2,
        },
    ],
)
def test_padded_batch_equals_each_utterance_alone(overrides):
    model = make("tiny", n_features=40, **overrides)
    # A few training steps so the batch-norm running statistics are not trivial.
    model.train()
    for seed in range(3):
        x, lens = padded_batch([50, 31, 9, 17], 40, seed)
        model(x, lens)[0].sum().backward()
    model.eval()
    x, lens = padded_batch([50, 31, 9, 17], 40, seed=7)
    log_probs, out_lens = model(x, lens)
    assert log_probs.shape == (int(out_lens.max()), 4, 29)
    for i, n in enumerate(lens.tolist()):
        alone, alone_lens = model(x[i : i + 1, :, :n], lens[i : i + 1])
        assert alone_lens.item() == out_lens[i].item()
        k = int(out_lens[i])
        torch.testing.assert_close(alone[:, 0], log_probs[:k, i], rtol=1e-5, atol=1e-5)


def test_padding_values_do_not_matter_in_training_mode():
    """Batch-norm statistics and convolutions ignore whatever lies past the lengths."""
    model = make("tiny", n_features=40)
    model.train()
    x, lens = padded_batch([40, 25, 12], 40)
    noisy = x.clone()
    for i, n in enumerate(lens.tolist()):
        noisy[i, :, n:] = 1e3
    a, a_lens = model(x, lens)
    b, _ = model(noisy, lens)
    for i, k in enumerate(a_lens.tolist()):
        torch.testing.assert_close(a[:k, i], b[:k, i], rtol=1e-5, atol=1e-5)


def test_output_lengths_are_exact():
    model = make("small", n_features=64)
    for n in [1, 2, 3, 10, 99, 100, 101]:
        x = torch.randn(1, 64, n)
        log_probs, out_lens = model.eval()(x, torch.tensor([n]))
        assert (
            log_probs.shape[0]
            == out_lens.item()
            == model.output_lengths(torch.tensor([n])).item()
        )
    # DS2 small: time stride 2 -> ceil(n / 2)
    assert model.output_lengths(torch.tensor([100, 101])).tolist() == [50, 51]


def test_log_probs_are_normalised_float32():
    model = make("tiny", n_features=40).eval()
    x, lens = padded_batch([20, 10], 40)
    log_probs, _ = model(x, lens)
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]))


def test_presets_build_with_documented_sizes():
    sizes = {name: count_parameters(make(name, n_features=161)) for name in PRESETS}
    assert sizes["paper"] > 100_000_000
    assert 50_000_000 < sizes["librispeech"] < 100_000_000
    assert 1_000_000 < sizes["small"] < 10_000_000
    assert sizes["tiny"] < 50_000


def test_config_round_trip_and_errors():
    config = ModelConfig.from_dict({**ModelConfig().to_dict(), **PRESETS["small"]})
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="rnn_type must be"):
        ModelConfig(rnn_type="transformer")


def test_learns_a_toy_alignment():
    """A few dozen steps on one pattern bring the CTC loss well down."""
    from asr.ctc import ctc_loss

    torch.manual_seed(0)
    model = make("tiny", n_features=40)
    x, lens = padded_batch([60, 60], 40)
    targets = torch.tensor([[3, 4, 5], [6, 7, 8]])
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(60):
        log_probs, out_lens = model(x, lens)
        loss = ctc_loss(log_probs, targets, out_lens, torch.tensor([3, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def _rnn_dtypes(model: DeepSpeech2, device: str) -> list[tuple]:
    """(input dtype, autocast on?) as each recurrent layer is called, under a bf16
    autocast on ``device``."""
    seen = []

    def hook(module, args):
        data = args[0].data if hasattr(args[0], "data") else args[0]
        seen.append((data.dtype, torch.is_autocast_enabled(device)))

    for rnn in model.rnns:
        rnn.register_forward_pre_hook(hook)
    feats = torch.randn(2, model.config.n_features, 50, device=device)
    lens = torch.tensor([50, 31], device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        log_probs, _ = model(feats, lens)
    assert torch.isfinite(log_probs).all()
    return seen


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_recurrent_layers_run_in_float32_under_a_bf16_autocast(rnn_type):
    """Autocast does not pick the RNN's dtype (cuDNN's wrapper would cast to fp16
    whatever the autocast dtype, pytorch#42385): the layers run in float32 with
    autocast off (asr.gru's own CPU training path aside)."""
    model = DeepSpeech2(ModelConfig(**{**PRESETS["tiny"], "rnn_type": rnn_type}))
    model.fast_gru = False  # the packed path, which CUDA and LSTMs take
    seen = _rnn_dtypes(model, "cpu")
    assert seen and all(s == (torch.float32, False) for s in seen), seen


@pytest.mark.cuda
@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_recurrent_layers_run_in_float32_under_a_bf16_autocast_on_cuda(rnn_type):
    model = DeepSpeech2(ModelConfig(**{**PRESETS["tiny"], "rnn_type": rnn_type}))
    seen = _rnn_dtypes(model.cuda(), "cuda")
    assert seen and all(s == (torch.float32, False) for s in seen), seen
