"""From manifests to batches: dataset, duration-bounded batch sampler, collate.

Batches are bounded by seconds of padded audio rather than by a count of utterances,
so that a batch of short utterances is large and one of long utterances is small,
and every step costs about the same (lhotse's dynamic batching). Utterances of similar
length are batched together (bucketing) so that little of a batch is padding.
The first epoch goes from the shortest batch to the longest (SortaGrad, DS2 sec. 3.1):
short utterances first stabilise the start of training.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from asr.audio import AudioError, load_audio
from asr.augment import speed_perturb
from asr.manifest import Utterance
from asr.text import PHONES, CharTokenizer

__all__ = [
    "Batch",
    "DurationBatchSampler",
    "PhoneError",
    "SpeechDataset",
    "collate",
    "read_phones",
]

log = logging.getLogger(__name__)


class Batch(NamedTuple):
    """A padded batch; tensors travel with their lengths.

    Attributes:
        waves: ``(B, N)`` float32 waveforms, zero past ``wave_lens``.
        wave_lens: ``(B,)`` int64 samples.
        targets: ``(B, L)`` int64 label indices, zero past ``target_lens``.
        target_lens: ``(B,)`` int64.
        ids: utterance ids (or audio paths), for reports.
        texts: reference transcripts.
        phones: ``(B, S, 3)`` float32 time-aligned phones ``(index in PHONES, start,
            end)`` in seconds of the (speed-perturbed) waveform; rows past
            ``phone_lens`` are padding.
        phone_lens: ``(B,)`` int64 phones per utterance; -1 for an utterance
            without phones (every frame of it unlabelled).
    """

    waves: Tensor
    wave_lens: Tensor
    targets: Tensor
    target_lens: Tensor
    ids: list[str]
    texts: list[str]
    phones: Tensor | None = None
    phone_lens: Tensor | None = None


class _Item(NamedTuple):
    wave: Tensor
    tokens: list[int]
    id: str
    text: str
    phones: Tensor | None = None  # (S, 3): PHONES index, start, end (seconds)


class PhoneError(ValueError):
    """A phones file that cannot be read or parsed (the message names it)."""


_PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}


def read_phones(path: str) -> Tensor:
    """A phones file -> ``(S, 3)`` float32 ``(index in PHONES, start, end)``.

    The file has one ``label start end`` line per phone (seconds, ``start <= end``,
    labels from :data:`asr.text.PHONES`), as the synthetic corpus writes them.

    Raises:
        PhoneError: the file is unreadable or a line is malformed (file and line
            named).
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PhoneError(f"{path}: cannot read phones: {e}") from e
    rows = []
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            label, start, end = fields[0], float(fields[1]), float(fields[2])
            if len(fields) != 3 or label not in _PHONE_INDEX or not 0 <= start <= end:
                raise ValueError
        except (ValueError, IndexError):
            raise PhoneError(
                f"{path}:{lineno}: expected 'LABEL START END' with a label of "
                f"asr.text.PHONES and 0 <= START <= END seconds, got {line!r}"
            ) from None
        rows.append((float(_PHONE_INDEX[label]), start, end))
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 3)


class SpeechDataset(Dataset):
    """Utterances read from disk as mono waveforms at ``sample_rate`` plus tokens.

    Items are addressed by ``index`` or by ``(index, epoch)`` (what
    :class:`DurationBatchSampler` yields): the speed-perturbation factor of an item is
    drawn from ``(seed, epoch, index)`` alone, so it does not depend on which worker
    loads it or on whether training was resumed.

    An unreadable file is logged (with its name and the reason) and yields ``None``,
    which :func:`collate` leaves out of the batch: one bad file never stops training.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        tokenizer: CharTokenizer,
        sample_rate: int = 16000,
        speed_factors: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        self.utterances = list(utterances)
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.speed_factors = tuple(speed_factors or ())
        self.seed = seed

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, key: int | tuple[int, int]) -> _Item | None:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        utt = self.utterances[index]
        try:
            wave = load_audio(
                utt.audio_filepath,
                self.sample_rate,
                offset=utt.offset,
                duration=utt.duration if utt.offset else None,
            )
        except AudioError as err:
            log.warning("skipping unreadable audio %s", err)
            return None
        phones = None
        if utt.phones_filepath is not None:
            try:
                phones = read_phones(utt.phones_filepath)
            except PhoneError as err:
                # The utterance still trains, without frame targets.
                log.warning("ignoring phones: %s", err)
        factor = 1.0
        if self.speed_factors:
            rng = random.Random((self.seed * 1_000_003 + epoch) * 1_000_003 + index)
            factor = rng.choice(self.speed_factors)
            if factor != 1.0:
                wave = speed_perturb(wave, self.sample_rate, factor)
        if phones is not None and factor != 1.0:
            phones[:, 1:] /= factor  # times of the sped-up (or slowed) waveform
        tokens = self.tokenizer.encode(utt.text)
        return _Item(wave, tokens, utt.id or utt.audio_filepath, utt.text, phones)


def collate(items: Sequence[_Item | None]) -> Batch:
    """Pad waveforms and targets; items that failed to load (None) are left out."""
    kept = [it for it in items if it is not None]
    B = len(kept)
    n = max((it.wave.numel() for it in kept), default=0)
    L = max((len(it.tokens) for it in kept), default=0)
    waves = torch.zeros(B, n)
    targets = torch.zeros(B, L, dtype=torch.int64)
    for i, it in enumerate(kept):
        waves[i, : it.wave.numel()] = it.wave
        targets[i, : len(it.tokens)] = torch.tensor(it.tokens, dtype=torch.int64)
    phones = phone_lens = None
    if any(it.phones is not None for it in kept):
        S = max(len(it.phones) for it in kept if it.phones is not None)
        phones = torch.zeros(B, S, 3)
        phone_lens = torch.full((B,), -1, dtype=torch.int64)
        for i, it in enumerate(kept):
            if it.phones is not None:
                phones[i, : len(it.phones)] = it.phones
                phone_lens[i] = len(it.phones)
    return Batch(
        waves=waves,
        wave_lens=torch.tensor([it.wave.numel() for it in kept], dtype=torch.int64),
        targets=targets,
        target_lens=torch.tensor([len(it.tokens) for it in kept], dtype=torch.int64),
        ids=[it.id for it in kept],
        texts=[it.text for it in kept],
        phones=phones,
        phone_lens=phone_lens,
    )


class DurationBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of utterance indices bounded by seconds of padded audio.

    A batch's cost is ``len(batch) * max(duration in batch)`` (what the padded tensor
    holds); it stays within ``max_batch_seconds`` (a single longer utterance makes a
    batch of its own) and within ``max_batch_size`` utterances.

    Order: with ``sortagrad`` the first epoch runs from the shortest batch to the
    longest. Other epochs sort by duration jittered by up to ``jitter`` (relative),
    so batch composition changes between epochs while lengths stay alike, then
    shuffle the batches. Everything derives from ``(seed, epoch)``: the same epoch
    always gives the same batches, which makes a resumed run identical.

    In training every epoch has the same number of batches, ``len(self)``: Lightning
    reads the length once and ends every epoch there, so an epoch with more batches
    than the first would leave its last ones (a random 7% of a 30 h corpus at the
    former 10% jitter) unseen. The count is that of the sorted packing plus
    ``jitter`` of it, rounded up; an epoch whose packing comes out with fewer
    batches halves its largest batches up to it, one with more packs again with
    half the jitter. The jitter costs about its own size in padding: 1% gives 0.9%
    more padded seconds and still mixes hundreds of utterances of like length
    (within 1% of the median duration: 280 in the demo's 10 h, 750 in 25 h); 10%
    cost 9.7% and 8% more steps.

    Distributed: the batches are split round-robin over ``num_replicas`` ranks, so
    every rank's i-th batch is about as long as the others' (SortaGrad and length
    buckets hold per rank), and every rank gets the same number of batches: a rank
    with one batch fewer would leave the others waiting in the gradient all-reduce
    forever. In training the list is padded by repeating its first batches (as
    torch's DistributedSampler does); in evaluation (``shuffle=False``) the largest
    batches are halved instead until the count divides evenly, so every utterance is
    scored exactly once and corpus-level WER over all ranks is exact (repeats remain
    only with fewer utterances than ranks).
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_batch_seconds: float,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        sortagrad: bool = True,
        seed: int = 0,
        jitter: float = 0.01,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be > 0, got {max_batch_seconds}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside {num_replicas} replicas")
        self.durations = [float(d) for d in durations]
        self.max_batch_seconds = max_batch_seconds
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.sortagrad = sortagrad
        self.seed = seed
        self.jitter = jitter
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._length: int | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pack(self, keys: Sequence[float]) -> list[list[int]]:
        """Utterances in the order of ``keys``, cut greedily into batches within the
        padded-seconds and size bounds (a single longer utterance: its own batch)."""
        order = sorted(range(len(keys)), key=lambda i: (keys[i], i))
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0.0
        for i in order:
            d = self.durations[i]
            full = (
                self.max_batch_size is not None and len(current) >= self.max_batch_size
            )
            too_long = (len(current) + 1) * max(longest, d) > self.max_batch_seconds
            if current and (full or too_long):
                batches.append(current)
                current, longest = [], 0.0
            current.append(i)
            longest = max(longest, d)
        if current:
            batches.append(current)
        return batches

    def _epoch_length(self) -> int:
        """Batches in every training epoch (before the split over ranks)."""
        if self._length is None:
            sorted_count = len(self._pack(self.durations))
            self._length = min(
                len(self.durations), math.ceil(sorted_count * (1 + self.jitter))
            )
        return self._length

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + self.epoch)
        in_order = not self.shuffle or (self.sortagrad and self.epoch == 0)
        if not self.shuffle:
            batches = self._pack(self.durations)
        else:
            target = self._epoch_length()
            jitter = 0.0 if in_order else self.jitter
            while True:
                keys = [d * (1 + rng.uniform(-jitter, jitter)) for d in self.durations]
                batches = self._pack(keys)
                if len(batches) <= target or jitter < 1e-4:
                    break
                jitter /= 2
            if len(batches) > target:  # only possible with the jitter spent
                batches = self._pack(self.durations)
            batches = _split_to(batches, target)
            if not in_order:
                rng.shuffle(batches)
        if self.num_replicas > 1 and batches:
            if not self.shuffle:
                batches = _split_until_divisible(batches, self.num_replicas)
            per_rank = math.ceil(len(batches) / self.num_replicas)
            batches = (batches * self.num_replicas)[: per_rank * self.num_replicas]
            batches = batches[self.rank :: self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        """Batches of ``(index, epoch)`` keys for :class:`SpeechDataset`."""
        for batch in self._batches():
            yield [(i, self.epoch) for i in batch]

    def __len__(self) -> int:
        if self.shuffle:  # the same every epoch, without packing one
            return math.ceil(self._epoch_length() / self.num_replicas)
        return len(self._batches())


def _split_largest(batches: list[list[int]]) -> bool:
    """Halve, in place, the batch with the most utterances (the first of equals);
    False if every batch holds one utterance. Order is kept, so sorted batches stay
    sorted, and halves stay within the bounds their whole kept."""
    i = max(range(len(batches)), key=lambda j: (len(batches[j]), -j))
    if len(batches[i]) < 2:
        return False
    half = len(batches[i]) // 2
    batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
    return True


def _split_to(batches: list[list[int]], count: int) -> list[list[int]]:
    """Halve the largest batches until there are ``count`` (or every batch holds
    one utterance)."""
    batches = list(batches)
    while len(batches) < count and _split_largest(batches):
        pass
    return batches


def _split_until_divisible(batches: list[list[int]], parts: int) -> list[list[int]]:
    """Halve the batch with the most utterances (the first of equals) in place until
    ``len(batches)`` is a multiple of ``parts`` or no batch can be split. Order is
    kept, so sorted batches stay sorted."""
    batches = list(batches)
    while len(batches) % parts and _split_largest(batches):
        pass
    return batches
