#!/usr/bin/env python
"""Benchmark our beam search (pyctcdecode's search + KenLM) against flashlight's.

On the same log-probabilities (the checkpoint run once over the manifest, cached as
``.npz``) and the same KenLM model, at equal beam widths, this measures WER and
decoding time of

- ours: :class:`asr.decoding.BeamSearchDecoder` in this process (1 worker), and,
  for information, ``decode_batch`` over ``--workers`` forked processes;
- flashlight: torchaudio's ``ctc_decoder`` (pip ``flashlight-text``; ``make bench``
  installs it), single-threaded, in lexicon mode (the lexicon is the LM's unigram
  list, words spelled with our characters and ``|`` as the word boundary), and,
  for information, in lexicon-free mode.

Settings, mapped where the two have the same parameter:

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

Timing: each round builds fresh decoders (untimed: ours memoizes KenLM scores
across utterances, so a decoder reused for a second pass over the same set would
be flattered), then each decodes the whole set, the decoders alternating in one
process, their order rotating every round (the machine is shared and noisy). We
report the median time and the median of the per-round ratios ours / flashlight.

    python tools/bench_decode.py --checkpoint exp/demo/model.ckpt \\
        --manifest data/synthetic/test.jsonl --lm-corpus data/synthetic/train.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from asr.decoding import BeamSearchDecoder, GreedyDecoder, load_decoder_settings  # noqa: E402
from asr.lm import LogProbSet, build_lm, load_lm, manifest_log_probs  # noqa: E402
from asr.metrics import error_rates  # noqa: E402

log = logging.getLogger("bench_decode")

Decode = Callable[[], list[str]]

# Ours, the flashlight decoder and the pairs compared (ours, flashlight).
OURS_LM, OURS_POOL, OURS_FREE = "ours + LM", "ours + LM, pool", "ours, no LM"
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
    ``token_min_logp`` and not the argmax, after pyctcdecode's log-softmax) set to
    -1e4: flashlight given exactly our per-frame candidates."""
    from pyctcdecode.decoder import _log_softmax

    from asr.decoding import _MIN_LOGP, _candidates

    out = []
    for x in lps:
        lp = np.clip(_log_softmax(x.astype(np.float64), axis=1), _MIN_LOGP, 0)
        keep = _candidates(lp, token_min_logp)
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
    p.add_argument("--workers", type=int, default=2, help="for the pool row")
    p.add_argument("--work-dir", type=Path, default=Path("exp/bench"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # "only N unigrams"
    if args.log_probs is None and not args.checkpoint.is_file():
        sys.exit(
            f"bench_decode: {args.checkpoint}: no such checkpoint (`make demo` "
            f"trains exp/demo/model.ckpt), or pass --checkpoint or --log-probs"
        )
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
    tensors = emissions(lps)
    same = emissions(our_candidates(lps, args.token_min_logp))

    def wer(hyps: list[str]) -> float:
        return 100 * error_rates(refs, hyps)[0].rate

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

    def measure(beam: int) -> dict[str, tuple[float, float, list[float]]]:
        """Each decoder's (WER, median time, times per round) at this beam."""
        settings = dict(
            beam_width=beam,
            beam_prune_logp=args.beam_prune_logp,
            token_min_logp=args.token_min_logp,
        )
        fl = flashlight_decoders(lm, unigrams, beam, args, alpha, beta)
        with_lm = dict(lm=lm, alpha=alpha, beta=beta)

        def fresh() -> dict[str, Decode]:
            """This round's decoders (ours are built anew, untimed)."""
            lm1 = BeamSearchDecoder(data.labels, workers=1, **with_lm, **settings)
            pool = BeamSearchDecoder(
                data.labels, workers=args.workers, **with_lm, **settings
            )
            free = BeamSearchDecoder(data.labels, workers=1, **settings)
            fs = data.frame_seconds
            return {
                OURS_LM: lambda: [lm1.decode(x, fs).text for x in lps],
                OURS_POOL: lambda: [h.text for h in pool.decode_batch(lps, fs)],
                OURS_FREE: lambda: [free.decode(x, fs).text for x in lps],
                FL_LM: lambda: fl[FL_LM](tensors),
                FL_SAME: lambda: fl[FL_SAME](same),
                FL_FREE_LM: lambda: fl[FL_FREE_LM](tensors),
                FL_FREE: lambda: fl[FL_FREE](tensors),
                FL_FREE_SAME: lambda: fl[FL_FREE_SAME](same),
            }

        for x in fresh().values():  # compile, load, touch everything once
            x()
        names = list(fresh())
        times: dict[str, list[float]] = {k: [] for k in names}
        hyps: dict[str, list[str]] = {}
        for r in range(args.rounds):
            decoders = fresh()
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                out = decoders[name]()
                times[name].append(time.perf_counter() - start)
                hyps.setdefault(name, out)
        return {k: (wer(hyps[k]), statistics.median(times[k]), times[k]) for k in names}

    results = {}  # (beam, decoder) -> (WER, median time, times)
    for beam in args.beam_widths:
        for name, value in measure(beam).items():
            results[beam, name] = value

    def ratio(beam: int, a: str, b: str) -> float:
        ta, tb = results[beam, a][2], results[beam, b][2]
        return statistics.median([x / y for x, y in zip(ta, tb, strict=True)])

    ours_pruning = (
        f"beam {{b}}, prune {args.beam_prune_logp:g}, "
        f"classes >= {args.token_min_logp:g} + argmax"
    )
    fl_pruning = {
        FL_LM: f"beam {{b}}, threshold {-args.beam_prune_logp:g}, all classes",
        FL_SAME: f"beam {{b}}, threshold {-args.beam_prune_logp:g}, our classes",
        FL_FREE: f"beam {{b}}, threshold {-args.beam_prune_logp:g}, all classes",
        FL_FREE_SAME: f"beam {{b}}, threshold {-args.beam_prune_logp:g}, our classes",
    }
    print(
        "| beam | ours (1 worker) | pruning | WER % | time s | flashlight | pruning "
        "| WER % | time s | time ours / flashlight |"
    )
    print("|---:|---|---|---:|---:|---|---|---:|---:|---:|")
    for beam in args.beam_widths:
        for a, b in PAIRS:
            wa, ta, _ = results[beam, a]
            wb, tb, _ = results[beam, b]
            print(
                f"| {beam} | {a} | {ours_pruning.format(b=beam)} | {wa:.2f} | "
                f"{ta:.3f} | {b} | {fl_pruning[b].format(b=beam)} | {wb:.2f} | "
                f"{tb:.3f} | {ratio(beam, a, b):.2f} |"
            )
    print(
        f"\nFor information: ours with decode_batch over {args.workers} forked "
        f"processes (a pool per call), and flashlight lexicon-free with the word LM "
        f"(scores characters as LM tokens: another model).\n"
    )
    print(
        "| beam | decoder | WER % | time s | x real time | / flashlight lexicon + LM |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    for beam in args.beam_widths:
        for name in (OURS_POOL, FL_FREE_LM):
            w, t, _ = results[beam, name]
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
