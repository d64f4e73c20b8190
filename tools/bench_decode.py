#!/usr/bin/env python
"""Benchmark our beam search against stock pyctcdecode's and flashlight's.

On the same log-probabilities (the checkpoint run once over the manifest, cached as
``.npz``) and the same KenLM model, at equal beam widths, this measures WER and
decoding time of

- ours: :class:`asr.decoding.BeamSearchDecoder` in this process (1 worker), and
  ``decode_batch`` over ``--workers`` forked processes;
- pyctcdecode (``--peers pyctcdecode``): stock pyctcdecode as its users use it
  (:class:`StockDecoder`: ``build_ctcdecoder`` + ``decode_beams``, or
  ``decode_beams_batch`` over a fork pool of ``--workers``), with the same LM,
  alpha, beta, beam, pruning and unknown-word offset, words with times and
  confidences made by the same code as ours. Ours runs the same search, so this
  measures what our wrapper costs or saves (its pool hands out the longest
  utterances first, one at a time); besides WER and time it says how many texts
  (and words with their times and confidences) are identical to ours;
- flashlight (``--peers flashlight``): torchaudio's ``ctc_decoder`` (pip
  ``flashlight-text``; ``make bench`` installs it), single-threaded, in lexicon
  mode (the lexicon is the LM's unigram list, words spelled with our characters
  and ``|`` as the word boundary), and, for information, in lexicon-free mode.

Settings shared with flashlight, mapped where the two have the same parameter:

- beam: ``beam_width`` = ``beam_size``;
- beam pruning: ``beam_prune_logp`` = ``-beam_threshold`` (both drop hypotheses
  that far below the frame's best);
- LM weight and word bonus: flashlight gets ``lm_weight = alpha * ln 10`` (its
  KenLM wrapper returns log10 scores, pyctcdecode converts them to natural log) and
  ``word_score = beta``; both log-add equal prefixes (``log_add=True``);
- per-frame class pruning has no common parameter. Ours (pyctcdecode's rule)
  expands the classes whose log-posterior reaches ``token_min_logp`` (-5), plus the
  argmax; flashlight's is a top-k, ``beam_size_token``, left at its default (all
  29 classes). So flashlight is also run with exactly our candidate classes: its
  emissions set to -1e4 for the classes we do not expand (they then always fall
  below its beam threshold). That pair has the same pruning throughout, and is the
  stricter time comparison (flashlight gets faster).

Not the same model either way: flashlight's lexicon mode only spells words of the
lexicon (``unk_score = -inf``) and smears LM scores over the lexicon trie, while
pyctcdecode allows any spelling at ``unk_score_offset`` per unknown word; its
lexicon-free mode scores every *character* as an LM token, so with a word LM it is
not the same model at all (reported for information). Without an LM, both are
plain prefix beam searches (ours vs flashlight lexicon-free with no LM).

Timing: each round builds fresh decoders (untimed, so no state carried over from
an earlier pass can flatter one), then each decodes the whole set, the decoders
alternating in one process, their order rotating every round (the machine is
shared and noisy). We report the median time and the median of the per-round
ratios of each pair.

    python tools/bench_decode.py --checkpoint exp/demo/model.ckpt \\
        --manifest data/synthetic/test.jsonl --lm-corpus data/synthetic/train.jsonl \\
        [--peers pyctcdecode flashlight]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from asr.decoding import (  # noqa: E402
    BeamSearchDecoder,
    GreedyDecoder,
    Hypothesis,
    Word,
    load_decoder_settings,
)
from asr.lm import build_lm, load_lm  # noqa: E402
from asr.metrics import error_rates  # noqa: E402
from asr.tune import LogProbSet, manifest_log_probs  # noqa: E402

log = logging.getLogger("bench_decode")

# A decoder's run over the whole set: hypotheses (ours, pyctcdecode) or texts.
Decode = Callable[[], list[Hypothesis] | list[str]]

# Ours, stock pyctcdecode and the pairs compared (ours, pyctcdecode).
OURS_LM, OURS_POOL, OURS_FREE = "ours + LM", "ours + LM, pool", "ours, no LM"
ST_LM, ST_POOL, ST_FREE = (
    "pyctcdecode + LM",
    "pyctcdecode + LM, pool",
    "pyctcdecode, no LM",
)
STOCK_PAIRS = [(OURS_LM, ST_LM), (OURS_POOL, ST_POOL), (OURS_FREE, ST_FREE)]
# The flashlight decoder and the pairs compared (ours, flashlight).
FL_LM, FL_SAME, FL_FREE_LM, FL_FREE, FL_FREE_SAME = (
    "flashlight lexicon + LM",
    "flashlight lexicon + LM, our candidates",
    "flashlight lexicon-free + LM",
    "flashlight lexicon-free, no LM",
    "flashlight lexicon-free, no LM, our candidates",
)
PAIRS = [
    (OURS_LM, FL_LM),
    (OURS_LM, FL_SAME),
    (OURS_FREE, FL_FREE),
    (OURS_FREE, FL_FREE_SAME),
]


class StockDecoder:
    """pyctcdecode 0.5.0 used as its users use it, behind asr's ``Decoder``
    interface: the peer :class:`asr.decoding.BeamSearchDecoder` must beat.

    ``build_ctcdecoder(labels, kenlm_model_path, unigrams, alpha, beta,
    unk_score_offset)`` once; ``decode`` is ``decode_beams(log_probs, beam_width,
    beam_prune_logp, token_min_logp, hotwords, hotword_weight)[0]`` on the float64
    log-probs (its own log-softmax and clipping, as ours prepares them);
    ``decode_batch`` is ``decode_beams_batch`` over a fork-context pool of
    ``workers`` made per call (as ours makes one). The best beam's word frames
    become :class:`asr.decoding.Word` s with times and confidences by the same
    code as ours (``_char_confidences``), so both arms return the same
    ``Hypothesis`` objects and differ only in the search.
    """

    name = "pyctcdecode"

    def __init__(
        self,
        labels: list[str],
        lm: str | os.PathLike[str] | None = None,
        alpha: float = 0.5,
        beta: float = 1.0,
        beam_width: int = 32,
        beam_prune_logp: float = -10.0,
        token_min_logp: float = -5.0,
        hotwords: list[str] | None = None,
        hotword_weight: float = 10.0,
        unk_score_offset: float = -10.0,
        workers: int = 1,
        blank: int = 0,
    ) -> None:
        from pyctcdecode import build_ctcdecoder

        self.labels, self.blank, self.workers = list(labels), blank, workers
        self._ids = {c: i for i, c in enumerate(self.labels) if i != blank}
        self._search = dict(
            beam_width=beam_width,
            beam_prune_logp=beam_prune_logp,
            token_min_logp=token_min_logp,
            hotwords=list(hotwords or ()),
            hotword_weight=hotword_weight,
        )
        ctc_labels = ["" if i == blank else c for i, c in enumerate(self.labels)]
        if lm is None:
            self._decoder = build_ctcdecoder(ctc_labels)
        else:
            self._decoder = build_ctcdecoder(
                ctc_labels,
                kenlm_model_path=str(lm),
                unigrams=list(load_lm(lm).unigrams),
                alpha=alpha,
                beta=beta,
                unk_score_offset=unk_score_offset,
            )

    def close(self) -> None:
        self._decoder.cleanup()

    def _hypothesis(
        self, log_probs: np.ndarray, beam: tuple, frame_seconds: float
    ) -> Hypothesis:
        from asr.decoding import _char_confidences

        text, frames, score = beam[0], beam[-3], beam[-1]
        words = []
        for w, (start, end) in frames:
            ids = [self._ids[c] for c in w]
            conf = _char_confidences(log_probs[start:end], ids, self.blank)
            words.append(
                Word(
                    text=w,
                    start=round(start * frame_seconds, 3),
                    end=round(end * frame_seconds, 3),
                    confidence=round(float(conf.mean()), 4),
                )
            )
        return Hypothesis(text, tuple(words), float(score))

    def decode(self, log_probs: np.ndarray, frame_seconds: float) -> Hypothesis:
        if log_probs.shape[0] == 0:
            return Hypothesis("", (), 0.0)
        beams = self._decoder.decode_beams(log_probs.astype(np.float64), **self._search)
        return self._hypothesis(log_probs, beams[0], frame_seconds)

    def decode_batch(
        self, log_probs: list[np.ndarray], frame_seconds: float
    ) -> list[Hypothesis]:
        workers = min(self.workers, len(log_probs))
        if workers <= 1:
            return [self.decode(x, frame_seconds) for x in log_probs]
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            beams = self._decoder.decode_beams_batch(
                pool, [x.astype(np.float64) for x in log_probs], **self._search
            )
        return [
            self._hypothesis(x, b[0], frame_seconds)
            for x, b in zip(log_probs, beams, strict=True)
        ]


def lm_for(args: argparse.Namespace) -> Path:
    """The LM to use: --lm, or one built (once) from --lm-corpus's texts."""
    if args.lm:
        return args.lm
    corpus = args.lm_corpus
    if corpus is None:
        sys.exit("bench_decode: give --lm LM or --lm-corpus TEXT|MANIFEST")
    if not corpus.is_file():
        sys.exit(f"bench_decode: {corpus}: no such file")
    out = args.work_dir / f"{corpus.stem}.{args.order}gram.bin"
    if out.is_file() and out.stat().st_mtime > corpus.stat().st_mtime:
        return out
    text = corpus
    if corpus.suffix == ".jsonl":
        text = args.work_dir / f"{corpus.stem}.lm.txt"
        with open(corpus) as src, open(text, "w") as dst:
            for line in src:
                if line.strip():
                    dst.write(json.loads(line)["text"] + "\n")
    result = build_lm(text, out, order=args.order)
    log.info("%s", result.summary())
    return out


def our_candidates(lps: list[np.ndarray], token_min_logp: float) -> list[np.ndarray]:
    """The log-probs with every class ours does not expand at a frame (below
    ``token_min_logp`` and not the argmax, after pyctcdecode's log-softmax and
    clipping at its MIN_TOKEN_CLIP_P) set to -1e4: flashlight given exactly our
    per-frame candidates."""
    from pyctcdecode.constants import MIN_TOKEN_CLIP_P
    from pyctcdecode.decoder import _log_softmax

    out = []
    for x in lps:
        lp = _log_softmax(x.astype(np.float64), axis=1)
        lp = np.clip(lp, math.log(MIN_TOKEN_CLIP_P), 0)
        keep = lp >= token_min_logp
        keep[np.arange(len(lp)), lp.argmax(axis=1)] = True
        out.append(np.where(keep, x, -1e4).astype(np.float32))
    return out


def flashlight_decoders(
    lm: Path, unigrams: tuple[str, ...], beam: int, args, alpha: float, beta: float
) -> dict[str, Callable[[list], list[str]]]:
    from torchaudio.models.decoder import ctc_decoder

    tokens = ["-", "|", "'", *"abcdefghijklmnopqrstuvwxyz"]  # our ids, blank first
    lexicon = args.work_dir / "lexicon.txt"
    if not lexicon.is_file() or lexicon.stat().st_mtime < lm.stat().st_mtime:
        lexicon.write_text("".join(f"{w}\t{' '.join(w)} |\n" for w in unigrams))
    common = dict(
        tokens=tokens,
        beam_size=beam,
        beam_size_token=None,  # all classes
        beam_threshold=-args.beam_prune_logp,
        log_add=True,
        blank_token="-",
        sil_token="|",
        sil_score=0.0,
    )
    lm_weights = dict(lm=str(lm), lm_weight=alpha * math.log(10), word_score=beta)
    lexicon_lm = ctc_decoder(
        lexicon=str(lexicon), unk_score=float("-inf"), **lm_weights, **common
    )
    free_lm = ctc_decoder(lexicon=None, **lm_weights, **common)
    free = ctc_decoder(lexicon=None, lm=None, lm_weight=0.0, word_score=0.0, **common)

    def run(decoder, words: bool) -> Callable[[list], list[str]]:
        def decode(emissions: list) -> list[str]:
            out = []
            for em in emissions:
                hyp = decoder(em)[0][0]
                if words:
                    out.append(" ".join(hyp.words))
                else:
                    chars = "".join(decoder.idxs_to_tokens(hyp.tokens))
                    out.append(" ".join(chars.replace("|", " ").split()))
            return out

        return decode

    return {
        FL_LM: run(lexicon_lm, True),
        FL_SAME: run(lexicon_lm, True),
        FL_FREE_LM: run(free_lm, False),
        FL_FREE: run(free, False),
        FL_FREE_SAME: run(free, False),
    }


def emissions(lps: list[np.ndarray]) -> list:
    """flashlight's input: ``(1, T, V)`` contiguous float32 CPU tensors."""
    import torch

    return [torch.from_numpy(x).unsqueeze(0).contiguous() for x in lps]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=Path("exp/demo/model.ckpt"))
    p.add_argument("--manifest", type=Path, default=Path("data/synthetic/test.jsonl"))
    p.add_argument(
        "--log-probs",
        type=Path,
        help="decode these cached log-probs (an .npz the bench or `asr lm tune "
        "--cache` wrote) instead of running --checkpoint over --manifest",
    )
    p.add_argument("--lm", type=Path, help="KenLM model (with its unigram list)")
    p.add_argument(
        "--lm-corpus",
        type=Path,
        default=Path("data/synthetic/train.jsonl"),
        help="text or manifest to build the LM from when --lm is not given",
    )
    p.add_argument("--order", type=int, default=4)
    p.add_argument("--beam-widths", type=int, nargs="+", default=[8, 32, 100])
    p.add_argument("--alpha", type=float, help="default: tuned (decoder.json) or 0.5")
    p.add_argument("--beta", type=float, help="default: tuned (decoder.json) or 1.0")
    p.add_argument("--beam-prune-logp", type=float, default=-10.0)
    p.add_argument("--token-min-logp", type=float, default=-5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--limit",
        type=int,
        default=100,
        help="utterances, spread evenly over the manifest (0: all)",
    )
    p.add_argument("--workers", type=int, default=2, help="for the pool rows")
    p.add_argument(
        "--peers",
        nargs="+",
        choices=["pyctcdecode", "flashlight"],
        default=["pyctcdecode", "flashlight"],
        help="the decoders ours is compared with",
    )
    p.add_argument("--work-dir", type=Path, default=Path("exp/bench"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # "only N unigrams"
    if args.log_probs is None and not args.checkpoint.is_file():
        sys.exit(
            f"bench_decode: {args.checkpoint}: no such checkpoint (`make demo` "
            f"trains exp/demo/model.ckpt), or pass --checkpoint or --log-probs"
        )
    stock, flashlight = "pyctcdecode" in args.peers, "flashlight" in args.peers
    if flashlight:
        try:
            import flashlight.lib.text  # noqa: F401
        except ImportError:
            sys.exit("bench_decode: needs flashlight-text: pip install -e '.[bench]'")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()

    if args.log_probs is not None:
        data, meta = LogProbSet.load(args.log_probs)
        source = f"{args.log_probs} ({meta})"
    else:
        data = manifest_log_probs(
            args.manifest,
            args.checkpoint,
            cache=args.work_dir / f"{args.manifest.stem}.logprobs.npz",
        )
        source = f"{args.manifest} through {args.checkpoint}"
    # --limit utterances spread evenly over the manifest (which is in speaker order),
    # so every speaker is in the sample and the WERs mean what the test set's do
    n_all = len(data.ids)
    n = min(args.limit or n_all, n_all)
    picked = [i * n_all // n for i in range(n)]
    lps = [data.log_probs[i] for i in picked]
    refs = [data.references[i] for i in picked]
    frames = sum(len(x) for x in lps)
    audio = frames * data.frame_seconds
    lm = lm_for(args)
    unigrams = load_lm(lm).unigrams
    tuned = load_decoder_settings(args.checkpoint)
    alpha = args.alpha if args.alpha is not None else tuned.get("alpha", 0.5)
    beta = args.beta if args.beta is not None else tuned.get("beta", 1.0)
    if flashlight:
        tensors = emissions(lps)
        same = emissions(our_candidates(lps, args.token_min_logp))

    def text(h: Hypothesis | str) -> str:
        return h if isinstance(h, str) else h.text

    def wer(hyps: list) -> float:
        return 100 * error_rates(refs, [text(h) for h in hyps])[0].rate

    # Greedy throughput.
    greedy = GreedyDecoder(data.labels)
    g_times = []
    for _ in range(max(3, args.rounds)):
        start = time.perf_counter()
        g_hyps = [h.text for h in greedy.decode_batch(lps, data.frame_seconds)]
        g_times.append(time.perf_counter() - start)
    g_t = statistics.median(g_times)

    print(
        f"\n{source}: {n} utterances, {frames} frames, {audio:.0f} s of audio; "
        f"LM {lm} ({len(unigrams)} words), alpha {alpha}, beta {beta}; "
        f"{args.rounds} rounds; load average before {load0[0]:.2f} on "
        f"{os.cpu_count()} CPUs\n"
    )
    print(
        f"Greedy (GreedyDecoder, words + times + confidences): "
        f"{frames / g_t:,.0f} frames/s, {audio / g_t:,.0f}x real time, "
        f"WER {wer(g_hyps):.2f}%\n"
    )

    def measure(beam: int) -> dict[str, tuple[float, float, list[float], list]]:
        """Each decoder's (WER, median time, times per round, outputs) at this
        beam."""
        settings = dict(
            beam_width=beam,
            beam_prune_logp=args.beam_prune_logp,
            token_min_logp=args.token_min_logp,
        )
        if flashlight:
            fl = flashlight_decoders(lm, unigrams, beam, args, alpha, beta)
        with_lm = dict(lm=lm, alpha=alpha, beta=beta)
        fs = data.frame_seconds

        def fresh() -> dict[str, Decode]:
            """This round's decoders (ours and pyctcdecode built anew, untimed)."""
            lm1 = BeamSearchDecoder(data.labels, workers=1, **with_lm, **settings)
            pool = BeamSearchDecoder(
                data.labels, workers=args.workers, **with_lm, **settings
            )
            free = BeamSearchDecoder(data.labels, workers=1, **settings)
            out: dict[str, Decode] = {
                OURS_LM: lambda: [lm1.decode(x, fs) for x in lps],
                OURS_POOL: lambda: pool.decode_batch(lps, fs),
                OURS_FREE: lambda: [free.decode(x, fs) for x in lps],
            }
            if stock:
                st1 = StockDecoder(data.labels, **with_lm, **settings)
                st_pool = StockDecoder(
                    data.labels, workers=args.workers, **with_lm, **settings
                )
                st_free = StockDecoder(data.labels, **settings)
                out[ST_LM] = lambda: [st1.decode(x, fs) for x in lps]
                out[ST_POOL] = lambda: st_pool.decode_batch(lps, fs)
                out[ST_FREE] = lambda: [st_free.decode(x, fs) for x in lps]
            if flashlight:
                out[FL_LM] = lambda: fl[FL_LM](tensors)
                out[FL_SAME] = lambda: fl[FL_SAME](same)
                out[FL_FREE_LM] = lambda: fl[FL_FREE_LM](tensors)
                out[FL_FREE] = lambda: fl[FL_FREE](tensors)
                out[FL_FREE_SAME] = lambda: fl[FL_FREE_SAME](same)
            return out

        for x in fresh().values():  # compile, load, touch everything once
            x()
        names = list(fresh())
        times: dict[str, list[float]] = {k: [] for k in names}
        hyps: dict[str, list] = {}
        for r in range(args.rounds):
            decoders = fresh()
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                out = decoders[name]()
                times[name].append(time.perf_counter() - start)
                hyps.setdefault(name, out)
        return {
            k: (wer(hyps[k]), statistics.median(times[k]), times[k], hyps[k])
            for k in names
        }

    results = {}  # (beam, decoder) -> (WER, median time, times, outputs)
    for beam in args.beam_widths:
        for name, value in measure(beam).items():
            results[beam, name] = value

    def ratio(beam: int, a: str, b: str) -> float:
        ta, tb = results[beam, a][2], results[beam, b][2]
        return statistics.median([x / y for x, y in zip(ta, tb, strict=True)])

    if stock:
        print(
            f"Stock pyctcdecode (same LM, alpha, beta, pruning; pool: "
            f"{args.workers} forked processes, a pool per call, both)\n"
        )
        print(
            "| beam | ours | WER % | time s | pyctcdecode | WER % | time s "
            "| same texts | same words | time pyctcdecode / ours |"
        )
        print("|---:|---|---:|---:|---|---:|---:|---:|---:|---:|")
        for beam in args.beam_widths:
            for a, b in STOCK_PAIRS:
                wa, ta, _, ha = results[beam, a]
                wb, tb, _, hb = results[beam, b]
                texts = sum(x.text == y.text for x, y in zip(ha, hb, strict=True))
                words = sum(x.words == y.words for x, y in zip(ha, hb, strict=True))
                print(
                    f"| {beam} | {a} | {wa:.2f} | {ta:.3f} | {b} | {wb:.2f} | "
                    f"{tb:.3f} | {texts}/{n} | {words}/{n} | {ratio(beam, b, a):.2f} |"
                )
        print("\nsame words: the same words with the same times and confidences.\n")
    if flashlight:
        ours_pruning = (
            f"beam {{b}}, prune {args.beam_prune_logp:g}, "
            f"classes >= {args.token_min_logp:g} + argmax"
        )
        threshold = f"beam {{b}}, threshold {-args.beam_prune_logp:g}"
        fl_pruning = {
            FL_LM: f"{threshold}, all classes",
            FL_SAME: f"{threshold}, our classes",
            FL_FREE: f"{threshold}, all classes",
            FL_FREE_SAME: f"{threshold}, our classes",
        }
        print(
            "| beam | ours (1 worker) | pruning | WER % | time s | flashlight "
            "| pruning | WER % | time s | time ours / flashlight |"
        )
        print("|---:|---|---|---:|---:|---|---|---:|---:|---:|")
        for beam in args.beam_widths:
            for a, b in PAIRS:
                wa, ta, _, _ = results[beam, a]
                wb, tb, _, _ = results[beam, b]
                print(
                    f"| {beam} | {a} | {ours_pruning.format(b=beam)} | {wa:.2f} | "
                    f"{ta:.3f} | {b} | {fl_pruning[b].format(b=beam)} | {wb:.2f} | "
                    f"{tb:.3f} | {ratio(beam, a, b):.2f} |"
                )
        print(
            f"\nFor information: ours with decode_batch over {args.workers} forked "
            f"processes (a pool per call), and flashlight lexicon-free with the "
            f"word LM (scores characters as LM tokens: another model).\n"
        )
        print(
            "| beam | decoder | WER % | time s | x real time "
            "| / flashlight lexicon + LM |"
        )
        print("|---:|---|---:|---:|---:|---:|")
        for beam in args.beam_widths:
            for name in (OURS_POOL, FL_FREE_LM):
                w, t, _, _ = results[beam, name]
                print(
                    f"| {beam} | {name} | {w:.2f} | {t:.3f} | {audio / t:,.0f} | "
                    f"{ratio(beam, name, FL_LM):.2f} |"
                )
    load1 = os.getloadavg()
    print(
        f"\ntime: median over rounds; ratio: median over rounds of the per-round "
        f"ratio (the two decoders timed in the same round). Load average after: "
        f"{load1[0]:.2f} on {os.cpu_count()} CPUs."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
