"""Synthesis: a speaker's prompts through its engine, to audio and phones.

One function per engine (:data:`SYNTHESIZERS`) takes a speaker, a batch of prompts
and a scratch directory, and returns for each prompt a
:class:`~asr.synthetic.phones.Speech` (the engine's audio at its own sample rate,
and the phones it spoke) or a string saying why there is none: one bad sentence is
reported and left out, never stops the batch.

Speed, per core: espeak-ng and the diphone voices synthesize at 150-230x real time,
flite's clustergen voices at ~55x and the HTS voice at ~35x; festival starts once
per batch.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from asr.synthetic.errors import SynthesisError
from asr.synthetic.phones import Speech, segments_from_ends
from asr.synthetic.speakers import Speaker
from asr.synthetic.voices import ESPEAK, FESTIVAL, FLITE, run_program

__all__ = ["SYNTHESIZERS", "EspeakHelper", "Synthesizer"]

# What each synthesizer returns per prompt: its speech, or why there is none.
Synthesizer = Callable[[Speaker, Sequence[str], Path], list[Speech | str]]

_ESPEAK_HELPER = Path(__file__).with_name("espeak_helper.py")


class EspeakHelper:
    """This process's end of the espeak-ng helper process (espeak_helper.py),
    started on first use: one per worker, kept for the worker's life."""

    _process: subprocess.Popen[bytes] | None = None

    @classmethod
    def say(cls, voice: str, wpm: int, pitch: int, amplitude: int, text: str) -> Speech:
        """``text`` in espeak-ng's ``voice`` at ``wpm`` words per minute, pitch
        0-99 and amplitude 0-200, as the espeak-ng program says it, with its phones.

        Raises:
            SynthesisError: the helper failed or reported an error.
        """
        if cls._process is None or cls._process.poll() is not None:
            # -I: the helper's directory is not on its path, so none of our modules
            # shadows the standard library's; -S: no site-packages, a fast start.
            cls._process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_ESPEAK_HELPER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        proc = cls._process
        assert proc.stdin is not None and proc.stdout is not None
        request = "\t".join(map(str, (voice, wpm, pitch, amplitude, text))).encode()
        try:
            proc.stdin.write(struct.pack("<I", len(request)) + request)
            proc.stdin.flush()
            header = proc.stdout.read(4)
            reply = proc.stdout.read(struct.unpack("<I", header)[0])
        except (OSError, struct.error) as e:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            cls._process = None
            raise SynthesisError(f"espeak-ng's library failed: {err or e}") from e
        if reply[:1] != b"K":
            raise SynthesisError(f"espeak-ng: {reply[1:].decode(errors='replace')}")
        rate, n = struct.unpack_from("<ii", reply, 1)
        starts = []
        for i in range(n):
            name, sample = struct.unpack_from("<8si", reply, 9 + 12 * i)
            starts.append((name.rstrip(b"\0").decode("ascii", "replace"), sample))
        samples = np.frombuffer(reply, dtype="<i2", offset=9 + 12 * n)
        audio = samples.astype(np.float64) / 32768.0
        # A phoneme event marks where its phoneme starts; it lasts until the next.
        ends = [sample for _, sample in starts[1:]] + [len(audio)]
        names_ends = [
            (name, end / rate) for (name, _), end in zip(starts, ends, strict=True)
        ]
        segments = segments_from_ends(ESPEAK, names_ends)
        first = starts[0][1] / rate if starts else 0.0
        if first > 0:  # before the first phoneme: silence
            segments = (("sil", 0.0, first),) + tuple(
                (label, max(a, first), b) for label, a, b in segments if b > first
            )
        return Speech(audio, rate, segments)


def _synthesize_espeak(
    speaker: Speaker, prompts: Sequence[str], tmp: Path
) -> list[Speech | str]:
    """espeak-ng, through the helper process (``tmp`` unused)."""
    args = speaker.engine_args()
    results: list[Speech | str] = []
    for prompt in prompts:
        try:
            results.append(
                EspeakHelper.say(args["-v"], args["-s"], args["-p"], args["-a"], prompt)
            )
        except SynthesisError as e:
            results.append(str(e))
    return results


def _synthesize_flite(
    speaker: Speaker, prompts: Sequence[str], tmp: Path
) -> list[Speech | str]:
    """flite, one process per prompt (it starts in milliseconds), WAVs in ``tmp``."""
    results: list[Speech | str] = []
    args = speaker.engine_args()
    for i, prompt in enumerate(prompts):
        wav = tmp / f"{i}.wav"
        cmd = [FLITE, "-voice", speaker.voice, "-psdur"]
        for name, value in args.items():
            cmd += ["--setf", f"{name}={value}"]
        cmd += ["-t", prompt, "-o", str(wav)]
        proc = run_program(cmd)
        # -psdur prints "name:end name:end ..." (seconds) on one line.
        names_ends = []
        for token in proc.stdout.split():
            name, _, end = token.rpartition(":")
            try:
                names_ends.append((name, float(end)))
            except ValueError:
                continue
        results.append(_read_speech(proc, wav, cmd, FLITE, names_ends))
    return results


def _synthesize_festival(
    speaker: Speaker, prompts: Sequence[str], tmp: Path
) -> list[Speech | str]:
    """festival, one process for the batch (a Scheme script in ``tmp``): starting it
    and loading a voice costs 0.2-0.3 s, longer than synthesizing a sentence."""
    args = speaker.engine_args()
    script = [f"(voice_{speaker.voice})"]
    if "hts -r" in args:
        script.append(
            f"(set! hts_engine_params (append hts_engine_params "
            f'(list \'("-r" {args["hts -r"]}))))'
        )
    else:
        script.append(f"(Parameter.set 'Duration_Stretch {args['Duration_Stretch']})")
        script.append(
            f"(set! int_lr_params '((target_f0_mean {args['target_f0_mean']}) "
            f"(target_f0_std {args['target_f0_std']}) "
            "(model_f0_mean 170) (model_f0_std 34)))"
        )
    wavs = [tmp / f"{i}.wav" for i in range(len(prompts))]
    for i, (prompt, wav) in enumerate(zip(prompts, wavs, strict=True)):
        # Prompts hold no quote or backslash (wordnet.clean_sentence): no escaping.
        assert '"' not in prompt and "\\" not in prompt, prompt
        script.append(f'(set! utt (utt.synth (Utterance Text "{prompt}")))')
        script.append(f'(utt.save.wave utt "{wav}" \'riff)')
        # One line per utterance: "@@ i name:end name:end ...".
        script.append(
            f'(format t "@@ {i}")(mapcar (lambda (s) (format t " %s:%f" '
            '(item.name s) (item.feat s "end"))) (utt.relation.items utt '
            '\'Segment))(format t "\\n")'
        )
    scm = tmp / "batch.scm"
    scm.write_text("\n".join(script) + "\n")
    cmd = [FESTIVAL, "--batch", str(scm)]
    proc = run_program(cmd, timeout=60.0 + 10.0 * len(prompts))
    phones: dict[int, list[tuple[str, float]]] = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "@@" and fields[1].isdigit():
            pairs = (f.rpartition(":") for f in fields[2:])
            phones[int(fields[1])] = [(n, float(e)) for n, _, e in pairs if n]
    return [
        _read_speech(proc, wav, cmd, FESTIVAL, phones.get(i, []))
        for i, wav in enumerate(wavs)
    ]


def _read_speech(
    proc: subprocess.CompletedProcess[str],
    wav: Path,
    cmd: Sequence[str],
    engine: str,
    names_ends: Sequence[tuple[str, float]],
) -> Speech | str:
    """The engine's WAV file and its phones, or why there are none."""
    if not (wav.is_file() and wav.stat().st_size > 44):
        err = (proc.stderr or proc.stdout or "").strip().splitlines()
        detail = err[-1] if err else "no output file"
        return f"{cmd[0]} exited with {proc.returncode}: {detail}"
    if not names_ends:
        return f"{cmd[0]} reported no phones for {wav.name}"
    try:
        audio, rate = sf.read(str(wav), dtype="float64", always_2d=True)
        return Speech(audio.mean(axis=1), rate, segments_from_ends(engine, names_ends))
    except (OSError, sf.LibsndfileError, SynthesisError) as e:
        return f"{wav.name}: {e}"


SYNTHESIZERS: dict[str, Synthesizer] = {
    ESPEAK: _synthesize_espeak,
    FLITE: _synthesize_flite,
    FESTIVAL: _synthesize_festival,
}
