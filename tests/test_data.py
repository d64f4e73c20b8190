"""Duration-bounded batches, SortaGrad, distributed splits, dataset and collate."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.data import (
    DurationBatchSampler,
    PhoneError,
    SpeechDataset,
    collate,
    read_phones,
)
from asr.manifest import Utterance
from asr.text import CharTokenizer

DURATIONS = [1.0, 5.0, 2.5, 0.5, 7.0, 3.0, 3.2, 1.1, 6.0, 0.7, 4.4, 2.0]


def flatten(batches):
    return [i for b in batches for i, _ in b]


def test_batches_respect_the_seconds_budget_and_cover_everything():
    sampler = DurationBatchSampler(DURATIONS, max_batch_seconds=8.0, max_batch_size=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(flatten(batches)) == list(range(len(DURATIONS)))
        for b in batches:
            idx = [i for i, _ in b]
            assert len(idx) <= 3
            assert len(idx) == 1 or len(idx) * max(DURATIONS[i] for i in idx) <= 8.0
            assert all(e == epoch for _, e in b)
        assert len(sampler) == len(batches)


def test_sortagrad_first_epoch_in_order_then_shuffled_deterministically():
    sampler = DurationBatchSampler(DURATIONS, max_batch_seconds=6.0, seed=3)
    first = list(sampler)
    longest = [max(DURATIONS[i] for i, _ in b) for b in first]
    assert longest == sorted(longest)
    sampler.set_epoch(1)
    second = [[i for i, _ in b] for b in sampler]
    assert second != [[i for i, _ in b] for b in first]
    again = DurationBatchSampler(DURATIONS, max_batch_seconds=6.0, seed=3)
    again.set_epoch(1)
    assert [[i for i, _ in b] for b in again] == second  # same (seed, epoch): same


def _padded_over_real(durations, batches):
    padded = sum(len(b) * max(durations[i] for i, _ in b) for b in batches)
    return padded / sum(durations)


@pytest.mark.parametrize("sortagrad", [True, False])
def test_every_training_epoch_has_len_batches_and_little_padding(sortagrad):
    """Lightning reads len() once and ends every epoch there: an epoch with more
    batches would lose its last ones. A corpus like the synthetic one (log-normal
    durations, the demo's 60 s / 32 bounds)."""
    rng = np.random.default_rng(0)
    durations = np.exp(rng.normal(0.8, 0.45, 3000)).round(3).tolist()
    sampler = DurationBatchSampler(
        durations, 60.0, max_batch_size=32, sortagrad=sortagrad, seed=1
    )
    length = len(sampler)
    for epoch in range(6):
        sampler.set_epoch(epoch)
        assert len(sampler) == length
        batches = list(sampler)
        assert len(batches) == length, epoch
        assert sorted(flatten(batches)) == list(range(len(durations)))
        assert all(
            len(b) == 1 or len(b) * max(durations[i] for i, _ in b) <= 60
            for b in batches
        )
        assert _padded_over_real(durations, batches) < 1.02, epoch
    sampler.set_epoch(1)
    one = [sorted(i for i, _ in b) for b in sampler]
    sampler.set_epoch(2)
    two = [sorted(i for i, _ in b) for b in sampler]
    assert len({tuple(b) for b in one} & {tuple(b) for b in two}) < length / 10


def test_without_sortagrad_the_first_epoch_is_shuffled():
    a = DurationBatchSampler(DURATIONS, 6.0, sortagrad=False, seed=1)
    longest = [max(DURATIONS[i] for i, _ in b) for b in a]
    assert longest != sorted(longest)


def test_distributed_ranks_get_disjoint_equal_shares():
    world = 3
    per_rank = []
    for rank in range(world):
        s = DurationBatchSampler(DURATIONS, 4.0, num_replicas=world, rank=rank, seed=5)
        s.set_epoch(2)
        per_rank.append(list(s))
    assert len({len(b) for b in per_rank}) == 1
    seen = [i for batches in per_rank for i in flatten(batches)]
    assert set(seen) == set(range(len(DURATIONS)))
    with pytest.raises(ValueError, match="rank 3 is outside 3 replicas"):
        DurationBatchSampler(DURATIONS, 4.0, num_replicas=3, rank=3)


def _ranks(durations, world, epoch, **kwargs):
    samplers = [
        DurationBatchSampler(durations, num_replicas=world, rank=r, **kwargs)
        for r in range(world)
    ]
    for s in samplers:
        s.set_epoch(epoch)
    return samplers, [list(s) for s in samplers]


@pytest.mark.parametrize("world", [2, 3, 4, 8])
def test_every_rank_gets_the_same_number_of_batches_in_every_epoch(world):
    """A rank with a batch fewer would hang DDP's all-reduce: check many corpora,
    training and evaluation, SortaGrad and shuffled epochs, len() and iteration."""
    rng = np.random.default_rng(world)
    for trial in range(40):
        n = int(rng.integers(1, 60))
        durations = rng.uniform(0.3, 20.0, n).round(2).tolist()
        budget = float(rng.uniform(5.0, 60.0))
        for shuffle in (True, False):
            for epoch in (0, 1, 2):
                samplers, per_rank = _ranks(
                    durations,
                    world,
                    epoch,
                    max_batch_seconds=budget,
                    max_batch_size=int(rng.integers(1, 9)),
                    shuffle=shuffle,
                    seed=trial,
                )
                counts = {len(b) for b in per_rank} | {len(s) for s in samplers}
                assert len(counts) == 1, (n, budget, shuffle, epoch, counts)
                seen = {i for batches in per_rank for i in flatten(batches)}
                assert seen == set(range(n))
                assert all(b for batches in per_rank for b in batches)


def test_sortagrad_and_buckets_hold_on_every_rank():
    durations = [0.5 + 0.37 * ((7 * i) % 40) for i in range(40)]
    _, per_rank = _ranks(durations, 2, 0, max_batch_seconds=12.0, seed=0)
    # padding, if any, repeats the first batch as rank 1's last: leave it out
    if per_rank[1][-1] == per_rank[0][0]:
        per_rank[1] = per_rank[1][:-1]
        per_rank[0] = per_rank[0][:-1]
    assert len(per_rank[0]) >= 3
    for batches in per_rank:  # epoch 0: each rank from shortest to longest
        longest = [max(durations[i] for i, _ in b) for b in batches]
        assert longest == sorted(longest)
    # the ranks' i-th batches are neighbours in length (bucketing across ranks)
    for a, b in zip(*per_rank, strict=True):
        la = max(durations[i] for i, _ in a)
        lb = max(durations[i] for i, _ in b)
        assert abs(la - lb) <= 1.5, (a, b)
    # later epochs: the same shuffled order of batches on every rank (same seed)
    _, one = _ranks(durations, 2, 1, max_batch_seconds=12.0, seed=0)
    _, again = _ranks(durations, 2, 1, max_batch_seconds=12.0, seed=0)
    assert one == again
    assert [flatten(b) for b in one] != [flatten(b) for b in per_rank]


def test_evaluation_scores_every_utterance_once_over_the_ranks():
    """Evaluation splits batches rather than repeating them, so the corpus-level
    WER gathered over ranks counts each utterance exactly once."""
    for world in (2, 3, 4):
        _, per_rank = _ranks(DURATIONS, world, 0, max_batch_seconds=9.0, shuffle=False)
        assert len({len(b) for b in per_rank}) == 1
        seen = sorted(i for batches in per_rank for i in flatten(batches))
        assert seen == list(range(len(DURATIONS)))
    # fewer utterances than ranks: a repeat is unavoidable, but counts still match
    _, per_rank = _ranks([1.0, 2.0], 3, 0, max_batch_seconds=9.0, shuffle=False)
    assert [len(b) for b in per_rank] == [1, 1, 1]


def write_wave(path, seconds: float, sr: int = 16000):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), sr)
    return str(path)


def test_dataset_collate_and_a_bad_file_is_reported_and_skipped(tmp_path, caplog):
    good = [
        Utterance(write_wave(tmp_path / "a.wav", 0.5), 0.5, "hello", id="a"),
        Utterance(write_wave(tmp_path / "b.wav", 1.0), 1.0, "good day", id="b"),
    ]
    bad_path = tmp_path / "c.wav"
    bad_path.write_text("not audio")
    utts = [*good, Utterance(str(bad_path), 1.0, "gone", id="c")]
    ds = SpeechDataset(utts, CharTokenizer())
    with caplog.at_level(logging.WARNING):
        batch = collate([ds[0], ds[(1, 0)], ds[2]])
    assert "c.wav" in caplog.text
    assert batch.ids == ["a", "b"]
    assert batch.waves.shape == (2, 16000)
    assert batch.wave_lens.tolist() == [8000, 16000]
    assert (batch.waves[0, 8000:] == 0).all()
    tok = CharTokenizer()
    assert batch.targets[1, : batch.target_lens[1]].tolist() == tok.encode("good day")
    assert batch.target_lens.tolist() == [5, 8]


def test_speed_perturbation_depends_only_on_seed_epoch_and_index(tmp_path):
    utts = [Utterance(write_wave(tmp_path / "a.wav", 1.0), 1.0, "a", id="a")]
    ds = SpeechDataset(utts, CharTokenizer(), speed_factors=(0.9, 1.1), seed=4)
    lengths = {ds[(0, epoch)].wave.numel() for epoch in range(12)}
    assert lengths == {17778, 14546}  # 16000 / 0.9 and / 1.1, rounded up
    assert torch.equal(ds[(0, 5)].wave, ds[(0, 5)].wave)


def test_phones_are_read_scaled_by_speed_and_padded_in_batches(tmp_path):
    from asr.text import PHONES

    phones = tmp_path / "a.phones"
    phones.write_text("sil 0.00 0.10\nhh 0.10 0.30\naa 0.30 0.90\n")
    table = read_phones(str(phones))
    expected = [
        [0, 0, 0.1],
        [PHONES.index("hh"), 0.1, 0.3],
        [PHONES.index("aa"), 0.3, 0.9],
    ]
    assert torch.allclose(table, torch.tensor(expected))
    wave = write_wave(tmp_path / "a.wav", 1.0)
    utts = [
        Utterance(wave, 1.0, "ha", id="a", phones_filepath=str(phones)),
        Utterance(write_wave(tmp_path / "b.wav", 0.5), 0.5, "b", id="b"),
    ]
    ds = SpeechDataset(utts, CharTokenizer(), speed_factors=(1.25,))
    batch = collate([ds[(0, 0)], ds[(1, 0)]])
    assert batch.phone_lens.tolist() == [3, -1]  # -1: no phones for b
    # 1.25 times faster: the phones end at 0.9 / 1.25 s of the shorter waveform
    assert batch.phones[0, 2, 2].item() == pytest.approx(0.72)
    assert batch.phones.shape == (2, 3, 3)
    # no utterance with phones: the batch carries none
    assert collate([ds[(1, 0)]]).phones is None


@pytest.mark.parametrize(
    ("content", "line"),
    [("sil 0 0.1\nqq 0.1 0.2\n", 2), ("aa 0.2 0.1\n", 1), ("aa 0.1\n", 1)],
)
def test_a_malformed_phones_file_names_its_line(tmp_path, content, line):
    path = tmp_path / "x.phones"
    path.write_text(content)
    with pytest.raises(PhoneError, match=rf"x\.phones:{line}: expected"):
        read_phones(str(path))


def test_an_unreadable_phones_file_costs_only_its_frame_targets(tmp_path, caplog):
    utt = Utterance(
        write_wave(tmp_path / "a.wav", 0.5),
        0.5,
        "a",
        id="a",
        phones_filepath=str(tmp_path / "missing.phones"),
    )
    with caplog.at_level(logging.WARNING):
        item = SpeechDataset([utt], CharTokenizer())[0]
    assert "missing.phones" in caplog.text
    assert item is not None and item.phones is None
