"""Audio in: read any file libsndfile reads, mix to mono, resample, as a float tensor.

Everything goes through :mod:`soundfile` (libsndfile: WAV in any PCM/float width, FLAC,
OGG/Vorbis, Opus, MP3 and more), never ``torchaudio.load``, which needs FFmpeg.
Resampling uses soxr's high-quality preset directly (the same call that
``librosa.resample(res_type="soxr_hq")`` makes, without importing librosa into every
data-loader worker).

A bad file raises :class:`AudioError`, whose message is one line naming the file and
the problem, so that a data loader can report it and move on to the next file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

if TYPE_CHECKING:  # torch loads on the first load_audio: `asr manifest` needs none
    import torch

__all__ = [
    "LEVEL_SECONDS",
    "SILENCE_DB",
    "AudioError",
    "AudioInfo",
    "audio_info",
    "chunk_levels",
    "load_audio",
    "stream_audio",
    "stream_levels",
]

# The silence gate (asr.posteriors.PosteriorRunner): a file (or segment) whose
# loudest 10 ms (RMS) is below SILENCE_DB dBFS is silence, and transcribes as nothing.
# A model whose features are normalized per utterance scales near-silence up to the
# loudness of speech and reads characters in it. The gate is per file, not per
# frame: a CTC model emits characters up to a second after their sound (the demo
# model often emits a sentence's last letter in its final frames, in the trailing
# silence), so blanking quiet frames inside a file would cut words.
SILENCE_DB = -55.0
LEVEL_SECONDS = 0.01

# libsndfile's MP3 seek is only approximate: after a seek, the bit reservoir of the
# first MPEG frame is missing and mpg123 decodes garbage there (measured: errors of 0.5
# on a 0.5-amplitude sine). We therefore decode MP3 from the start and discard.
_DECODE_FROM_START = {"MP3"}
# MP3 headers without a Xing/LAME frame count only estimate the length, so a shortfall
# of up to two MPEG frames (2 x 1152 samples) or 1% is not taken as truncation.
_MP3_FRAME = 1152
# libsndfile logs "data : <declared> (should be <actual>)" for a RIFF/WAVE file whose
# data chunk is shorter than its header says, i.e. a truncated download or copy.
_DATA_SHORT = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers (pipes, RF64) put a placeholder size; that is not truncation.
_STREAMED_SIZE = 0x7F000000


class AudioError(Exception):
    """A file that cannot be used as audio; ``str(e)`` is ``"<path>: <reason>"``.

    Attributes:
        path: the file, as given by the caller.
        reason: what is wrong with it, one line.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str]]:
        # Picklable with both fields, so it survives DataLoader worker processes.
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says.

    Attributes:
        path: the file.
        sample_rate: samples per second per channel (Hz).
        frames: samples per channel.
        channels: number of channels.
        duration: ``frames / sample_rate``, in seconds.
    """

    path: str
    sample_rate: int
    frames: int
    channels: int
    duration: float


def _check_file(path: str) -> None:
    """Raise AudioError unless ``path`` is an existing, non-empty, readable file."""
    if not os.path.exists(path):
        raise AudioError(path, "file not found")
    if os.path.isdir(path):
        raise AudioError(path, "is a directory, not an audio file")
    try:
        with open(path, "rb") as f:
            first = f.read(1)
    except OSError as e:
        raise AudioError(path, f"cannot open: {e.strerror or e}") from e
    if not first:
        raise AudioError(path, "empty file (0 bytes)")


def _libsndfile_reason(e: Exception) -> str:
    """The useful part of a soundfile exception's message."""
    msg = getattr(e, "error_string", None) or str(e)
    msg = msg.strip()
    if msg.startswith("Error : "):
        msg = msg[len("Error : ") :]
    return msg.rstrip(".")


def _open_error(path: str, e: Exception) -> AudioError:
    msg = _libsndfile_reason(e)
    if "format not recognised" in msg.lower():
        return AudioError(path, f"not an audio file soundfile can read ({msg})")
    return AudioError(path, f"unreadable audio header ({msg})")


def _truncation(path: str, header_log: str) -> AudioError | None:
    """AudioError if a WAV-family header declares more data than the file holds.

    ``header_log`` is libsndfile's log of the header parse (``extra_info``).
    """
    m = _DATA_SHORT.search(header_log or "")
    if m is None:
        return None
    declared, actual = int(m.group(1)), int(m.group(2))
    if declared == 0 or declared >= _STREAMED_SIZE or actual >= declared:
        return None
    return AudioError(
        path,
        f"truncated: header declares {declared} bytes of audio data, "
        f"the file holds {actual}",
    )


def _check_header(path: str, f: sf.SoundFile) -> None:
    """Raise AudioError for a header that opened but is unusable."""
    error = _truncation(path, f.extra_info)
    if error is not None:
        raise error
    if f.samplerate <= 0:
        raise AudioError(path, f"invalid sample rate {f.samplerate} in the header")
    if f.frames <= 0:
        raise AudioError(path, "no audio frames (the file holds only a header)")


def _open(path: str) -> sf.SoundFile:
    """Open ``path`` for reading, after the checks of :func:`audio_info`."""
    _check_file(path)
    try:
        # bytes: soundfile encodes a str strictly, and a name that is not UTF-8
        # (surrogate escapes) would fail
        f = sf.SoundFile(os.fsencode(path))
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as e:
        raise _open_error(path, e) from e
    try:
        _check_header(path, f)
    except BaseException:
        f.close()
        raise
    return f


def _info(path: str, f: sf.SoundFile) -> AudioInfo:
    return AudioInfo(
        path=path,
        sample_rate=int(f.samplerate),
        frames=int(f.frames),
        channels=int(f.channels),
        duration=f.frames / f.samplerate,
    )


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header (no samples are decoded).

    Args:
        path: an audio file in any format libsndfile reads.

    Returns:
        Its :class:`AudioInfo`.

    Raises:
        AudioError: missing, empty, not audio, unreadable header, a WAV whose data
            chunk is shorter than its header says (truncated), or zero frames.
    """
    p = os.fspath(path)
    with _open(p) as f:
        return _info(p, f)


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int = 16000,
    offset: float = 0.0,
    duration: float | None = None,
) -> torch.Tensor:
    """Load a file, or a segment of it, as a mono waveform.

    Channels are mixed down by averaging; a file at another rate is resampled with
    soxr ("HQ"); samples are clipped to ``[-1, 1]`` (a float file may exceed it, and
    resampling a clipped signal overshoots by Gibbs ringing).

    Args:
        path: an audio file in any format libsndfile reads.
        sample_rate: the rate of the returned waveform, in Hz.
        offset: start of the segment, in seconds from the start of the file.
        duration: length of the segment in seconds; ``None`` reads to the end. A
            segment running past the end of the file is cut at the end.

    Returns:
        ``(num_samples,)`` float32 tensor, values in ``[-1, 1]``, at ``sample_rate``;
        ``num_samples`` is about ``frames_read * sample_rate / file_rate``.

    Raises:
        AudioError: missing, empty, not audio, unreadable header, zero frames,
            truncated or corrupt data, non-finite samples, an ``offset`` at or beyond
            the end of the file, or a segment with no frames.
        ValueError: a non-positive ``sample_rate``, or a negative ``offset`` or
            ``duration`` (a caller's mistake, not the file's).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if offset < 0 or not np.isfinite(offset):
        raise ValueError(f"offset must be a non-negative number of seconds: {offset}")
    if duration is not None and (duration < 0 or not np.isfinite(duration)):
        raise ValueError(
            f"duration must be a non-negative number of seconds: {duration}"
        )
    p = os.fspath(path)
    with _open(p) as f:  # one open for the header checks and the samples
        info = _info(p, f)
        fmt = f.format
        file_rate = info.sample_rate
        start = round(offset * file_rate)
        if start >= info.frames:
            raise AudioError(
                p,
                f"offset {offset:g} s is at or beyond the end of the audio "
                f"({info.duration:g} s)",
            )
        available = info.frames - start
        wanted = available
        if duration is not None:
            wanted = min(round(duration * file_rate), available)
        if wanted <= 0:
            raise AudioError(
                p,
                f"the segment at {offset:g} s lasting {duration:g} s holds no samples",
            )
        try:
            if fmt in _DECODE_FROM_START:
                data = f.read(start + wanted, dtype="float32", always_2d=True)[start:]
            else:
                if start:
                    f.seek(start)
                data = f.read(wanted, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as e:
            reason = _libsndfile_reason(e)
            raise AudioError(p, f"corrupt or truncated audio data ({reason})") from e
    got = data.shape[0]
    # (frames, channels); a shortfall means the header promised more than the data.
    tolerance = max(2 * _MP3_FRAME, wanted // 100) if fmt == "MP3" else 0
    if got < wanted - tolerance or got == 0:
        raise AudioError(
            p,
            f"corrupt or truncated audio data: the header promises {wanted} frames "
            f"from {start}, only {got} could be decoded",
        )
    if not np.isfinite(data).all():
        raise AudioError(p, "the audio contains NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float32)  # (frames, channels) -> (frames,)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ")
    mono = np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)
    import torch

    return torch.from_numpy(np.ascontiguousarray(mono))


def stream_audio(
    path: str,
    sample_rate: int,
    offset: float = 0.0,
    duration: float | None = None,
    block_seconds: float = 10.0,
) -> Iterator[np.ndarray]:
    """A file (or a segment of it) as consecutive mono float32 blocks of about
    ``block_seconds`` at ``sample_rate``, read and resampled incrementally: memory
    holds one block, so an hour-long file is never loaded whole.

    The concatenated blocks are :func:`load_audio`'s output for the same
    arguments (the same mixdown, soxr "HQ" resampling run as a stream, and clipping),
    and the same problems raise the same :class:`AudioError`.
    """
    info = audio_info(path)  # missing, empty, not audio, truncated header: AudioError
    rate = info.sample_rate
    start = round(offset * rate)
    if start >= info.frames:
        raise AudioError(
            path,
            f"offset {offset:g} s is at or beyond the end of the audio "
            f"({info.duration:g} s)",
        )
    wanted = info.frames - start
    if duration is not None:
        wanted = min(round(duration * rate), wanted)
    if wanted <= 0:
        raise AudioError(path, f"the segment at {offset:g} s holds no samples")
    resampler = (
        soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
        if rate != sample_rate
        else None
    )
    block = max(1, round(block_seconds * rate))
    try:
        f = sf.SoundFile(os.fsencode(path))
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as e:
        raise AudioError(path, f"unreadable audio header ({e})") from e
    got = 0
    fmt = f.format
    with f:
        try:
            if start:
                if fmt == "MP3":  # seeking in MP3 is approximate (asr.audio)
                    skip = start
                    while skip > 0:
                        n = len(f.read(min(skip, block), dtype="float32"))
                        if n == 0:
                            break
                        skip -= n
                else:
                    f.seek(start)
            while got < wanted:
                data = f.read(min(block, wanted - got), dtype="float32", always_2d=True)
                if len(data) == 0:
                    break
                got += len(data)
                yield _mono_block(path, data, resampler, last=got >= wanted)
        except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as e:
            raise AudioError(path, f"corrupt or truncated audio data ({e})") from e
    # As asr.audio: an MP3 header without a frame count only estimates the length.
    tolerance = max(2 * 1152, wanted // 100) if fmt == "MP3" else 0
    if got < wanted - tolerance:
        raise AudioError(
            path,
            f"corrupt or truncated audio data: the header promises {wanted} frames "
            f"from {start}, only {got} could be decoded",
        )
    if got < wanted and resampler is not None:  # flush what the resampler holds
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        yield np.clip(tail, -1.0, 1.0).astype(np.float32, copy=False)


def _mono_block(
    path: str, data: np.ndarray, resampler: soxr.ResampleStream | None, last: bool
) -> np.ndarray:
    """``(frames, channels)`` file samples -> mono, resampled, clipped."""
    if not np.isfinite(data).all():
        raise AudioError(path, "the audio contains NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float32)  # (frames, channels) -> (frames,)
    if resampler is not None:
        mono = resampler.resample_chunk(mono, last=last)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def chunk_levels(wave: np.ndarray, hop: int) -> np.ndarray:
    """dBFS (RMS) of consecutive ``hop``-sample chunks of ``wave``, the last one
    possibly shorter."""
    n = len(wave)
    if n == 0:
        return np.zeros(0)
    chunks = -(-n // hop)
    padded = np.zeros(chunks * hop, np.float64)
    padded[:n] = wave
    power = np.square(padded).reshape(chunks, hop).sum(1)
    counts = np.full(chunks, hop, np.float64)
    counts[-1] = n - (chunks - 1) * hop
    return 10 * np.log10(power / counts + 1e-20)


def stream_levels(blocks: Iterator[np.ndarray], hop: int) -> Iterator[np.ndarray]:
    """:func:`_chunk_levels` of a stream of blocks, chunk by chunk as they fill."""
    carry = np.zeros(0, np.float32)
    for block in blocks:
        carry = np.concatenate([carry, block])
        whole = len(carry) // hop * hop
        if whole:
            yield chunk_levels(carry[:whole], hop)
            carry = carry[whole:]
    if len(carry):
        yield chunk_levels(carry, hop)
