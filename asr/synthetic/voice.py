"""More speech of one speaker of a corpus, on sentences that corpus holds out.

``asr data synthetic-voice CORPUS --speaker 9503 OUT --minutes 10 --dev-minutes 2``
re-plans the corpus from its ``config.json`` (the plan is a pure function of the
options, :func:`asr.synthetic.plan.plan_corpus`), takes that speaker as it was made
-- engine, voice, tempo, pitch, speed and channel -- and has it say WordNet
sentences that no dev or test speaker of the corpus says, shuffled with ``seed``:
``OUT/train`` about ``minutes`` of them, ``OUT/dev`` about ``dev_minutes`` more,
planned from the lengths of the speaker's own recordings in the corpus, in the
corpus's LibriSpeech layout (chapters ``CHAPTER+1`` and ``CHAPTER+2``, so
no id collides with the corpus's). It is the data of a fine-tuning experiment: a
few minutes of a voice the model does poorly on, to adapt it with
(recipes/synthetic/finetune.sh).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from asr.synthetic.corpus import _write_transcripts
from asr.synthetic.errors import CorpusError
from asr.synthetic.plan import (
    Options,
    SpeakerPlan,
    Utterance,
    estimate_seconds,
    make_tasks,
    plan_corpus,
)
from asr.synthetic.voices import available_voices
from asr.synthetic.wordnet import DEFAULT_WORDNET_DIR, Sentence, load_sentences
from asr.synthetic.worker import run_tasks

__all__ = ["generate_voice"]


def _corpus_options(corpus: Path) -> Options:
    path = corpus / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(
            f"{path}: not found; is {corpus} a synthetic corpus?"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise CorpusError(f"{path}: unreadable ({e})") from None
    data.pop("generator_version", None)
    fields = {f.name for f in dataclasses.fields(Options)}
    try:
        return Options(
            **{
                k: tuple(v) if isinstance(v, list) else v
                for k, v in data.items()
                if k in fields
            }
        )
    except TypeError as e:
        raise CorpusError(f"{path}: not a synthetic corpus's options ({e})") from None


def _check_recorded(corpus: Path, plan: SpeakerPlan) -> float:
    """Refuse a re-planned speaker that is not the one ``voices.json`` recorded
    (another WordNet, or other voices installed, give another plan).

    Returns:
        How much longer the speaker's recorded utterances are than
        :func:`estimate_seconds` said (1.2: 20 % longer), to plan by.
    """
    path = corpus / "voices.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))["speakers"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise CorpusError(
            f"{path}: missing or unreadable; is the corpus complete?"
        ) from None
    s = plan.speaker
    entry = next((r for r in recorded if r.get("speaker") == str(s.speaker_id)), None)
    # through JSON, as voices.json was written
    now = json.loads(
        json.dumps(
            {
                "engine_args": s.engine_args(),
                "channel": dataclasses.asdict(s.channel),
            }
        )
    )
    if entry is None or any(entry.get(k) != v for k, v in now.items()):
        raise CorpusError(
            f"{path}: speaker {s.speaker_id} was made with other settings than this "
            "machine's WordNet and voices give it now; its speech cannot be remade"
        )
    estimated = sum(
        estimate_seconds(u.sentence, s.engine, s.rate, s.speed) for u in plan.utterances
    )
    recorded_seconds = entry.get("seconds")
    if not isinstance(recorded_seconds, (int, float)) or not estimated:
        return 1.0
    return max(0.25, min(4.0, recorded_seconds / estimated))


def _take(
    sentences: list[Sentence],
    start: int,
    speaker_plan: SpeakerPlan,
    seconds: float,
    scale: float,
) -> int:
    """The index after the sentences, from ``start``, whose estimated lengths
    (times ``scale``) first reach ``seconds``."""
    s = speaker_plan.speaker
    total, i = 0.0, start
    while total < seconds:
        if i >= len(sentences):
            raise CorpusError("not enough held-out-free WordNet sentences left")
        total += scale * estimate_seconds(sentences[i], s.engine, s.rate, s.speed)
        i += 1
    return i


def generate_voice(
    corpus: Path,
    speaker: str,
    out_dir: Path,
    minutes: float = 10.0,
    dev_minutes: float = 2.0,
    seed: int = 1,
    jobs: int = 1,
    wordnet_dir: Path = DEFAULT_WORDNET_DIR,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Make ``minutes`` (train) and ``dev_minutes`` (dev) of ``speaker``'s speech.

    Args:
        corpus: a corpus made by :func:`asr.synthetic.generate_corpus`.
        speaker: the speaker's id in it (``voices.json``, the manifests' ``speaker``).
        out_dir: where ``train/`` and ``dev/`` go (LibriSpeech layout).
        minutes, dev_minutes: about how much audio, planned from estimated lengths.
        seed: shuffles the sentences and seeds the channel's random draws (noise),
            which differ from the corpus's own utterances of the speaker.
        jobs: worker processes.
        wordnet_dir: WordNet's ``data.*`` (the corpus's sentence source).
        progress: one-line reports (None: stderr).

    Returns:
        Seconds of audio made per split (``train``, ``dev``).

    Raises:
        CorpusError: not a corpus, an unknown speaker, too few sentences, or every
            utterance failing.
    """
    log = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    corpus, out_dir = Path(corpus), Path(out_dir)
    options = _corpus_options(corpus)
    voices = available_voices(allow_missing=bool(options.missing_voices))
    sentences = load_sentences(wordnet_dir, options.min_words, options.max_words)
    plans = plan_corpus(sentences, options, voices)
    found = [p for p in plans if str(p.speaker.speaker_id) == str(speaker)]
    if not found:
        known = ", ".join(
            str(p.speaker.speaker_id) for p in plans if p.speaker.split != "train"
        )
        raise CorpusError(
            f"{corpus}: no speaker {speaker!r} (dev and test speakers: {known})"
        )
    plan = found[0]
    # the planning estimate is per engine; this speaker's own recordings say more
    scale = _check_recorded(corpus, plan)
    held = {
        u.sentence.transcript
        for p in plans
        if p.speaker.split != "train"
        for u in p.utterances
    }
    free = [s for s in sentences if s.transcript not in held]
    order = np.random.default_rng([seed, 29, int(speaker)]).permutation(len(free))
    free = [free[i] for i in order]
    end_train = _take(free, 0, plan, minutes * 60, scale)
    end_dev = _take(free, end_train, plan, dev_minutes * 60, scale)
    splits = {"train": free[:end_train], "dev": free[end_train:end_dev]}
    made: list[SpeakerPlan] = []
    for k, (split, texts) in enumerate(splits.items(), 1):
        s = dataclasses.replace(
            plan.speaker, split=split, chapter_id=plan.speaker.chapter_id + k
        )
        utts = tuple(
            Utterance(f"{s.speaker_id}-{s.chapter_id}-{i:04d}", i, sentence)
            for i, sentence in enumerate(texts)
        )
        made.append(SpeakerPlan(s, utts))
    tasks = make_tasks(made, out_dir, dataclasses.replace(options, seed=seed))
    log(
        f"speaker {speaker} ({plan.speaker.base_voice}): "
        f"{len(splits['train'])} + {len(splits['dev'])} sentences no dev or test "
        f"speaker says -> {out_dir}"
    )
    seconds: dict[str, float] = {}
    failed = []
    for results in run_tasks(tasks, jobs):
        for r in results:
            if r.error is None:
                seconds[r.utt_id] = r.seconds
            else:
                failed.append(r.utt_id)
                log(f"warning: {r.utt_id} failed and is left out: {r.error}")
    if not seconds:
        raise CorpusError(f"{out_dir}: every utterance failed")
    totals = {}
    for p in made:
        _write_transcripts(p, out_dir, set(seconds))
        totals[p.speaker.split] = sum(seconds.get(u.utt_id, 0.0) for u in p.utterances)
    return totals
