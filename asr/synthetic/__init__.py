"""An offline English speech corpus made with text-to-speech voices.

The corpus lets the whole pipeline (manifests, training, decoding, evaluation) run
on a laptop or in CI with no download. Text comes from WordNet's usage examples,
audio from three Debian text-to-speech engines, and every synthetic speaker gets a
fixed configuration of engine, base voice, speaking rate, pitch and channel; dev and
test speakers use only held-out base voices, so their scores measure generalisation
to new voices.

    asr data synthetic OUT_DIR [--hours 2 | --minutes M] [--seed 0] [--jobs N] ...
    asr data synthetic-lm-text -o LM_TEXT --include train.jsonl --exclude dev.jsonl

or from Python: ``generate_corpus(Path(out_dir), hours=2.0, seed=0, jobs=2)``.

The modules, in the order the data flows:

- :mod:`~asr.synthetic.wordnet`: the text source, cleaned to what is said as written;
- :mod:`~asr.synthetic.voices`: the engines' voices, held-out ones, what is installed;
- :mod:`~asr.synthetic.speakers`: a speaker's voice, tempo, pitch, speed and channel;
- :mod:`~asr.synthetic.plan`: who says what in which split, and the batches;
- :mod:`~asr.synthetic.engines`: synthesis (with :mod:`~asr.synthetic.espeak_helper`);
- :mod:`~asr.synthetic.phones`: the engines' phones as ARPAbet with times;
- :mod:`~asr.synthetic.channel`: trim, speed, filters, reverb, level, noise;
- :mod:`~asr.synthetic.worker`: a batch made and written, atomically;
- :mod:`~asr.synthetic.corpus`: the driver :func:`generate_corpus`, resumable;
- :mod:`~asr.synthetic.lm_text`: the recipe's LM text, without held-out synsets.

Speed: about 70 s of audio per CPU-second (0.5 h in 18 s wall with 2 workers on a
shared 2-core machine: 100x real time). WordNet examples are short: 2.4 s per
utterance with its silences (2.5 words per second, close to LibriSpeech's 2.7).

Determinism: the plan (texts, speakers, configurations) is a pure function of the
options; every utterance's random draws come from a generator seeded by (seed,
speaker, utterance), so the same seed gives the same samples whatever ``--jobs``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asr.synthetic.corpus import CorpusSummary, generate_corpus
    from asr.synthetic.errors import CorpusError, EngineMissingError
    from asr.synthetic.lm_text import LmTextSummary, write_lm_text

__all__ = [
    "CorpusError",
    "CorpusSummary",
    "EngineMissingError",
    "LmTextSummary",
    "generate_corpus",
    "write_lm_text",
]

# Loaded on first use, so that the LM-text step does not import scipy and soxr.
_HOMES = {
    "CorpusError": "errors",
    "CorpusSummary": "corpus",
    "EngineMissingError": "errors",
    "LmTextSummary": "lm_text",
    "generate_corpus": "corpus",
    "write_lm_text": "lm_text",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        module = importlib.import_module(f"asr.synthetic.{_HOMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'asr.synthetic' has no attribute {name!r}")
