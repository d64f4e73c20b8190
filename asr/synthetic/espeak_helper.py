"""The espeak-ng helper process: run as a program by :mod:`asr.synthetic.engines`
(``python -I -S espeak_helper.py``, one per worker), never imported for use.

The espeak-ng program cannot say when it speaks each phoneme; its library can
(phoneme events), but it keeps state from one sentence to the next (so a sentence
would sound different depending on what the process said before) and cannot be
initialised twice. So this process initialises the library once and forks a
pristine copy of itself for every sentence: the samples depend on the sentence and
the settings alone, and are the espeak-ng program's (tested).

Protocol, on stdin/stdout, each message prefixed by its length in bytes (``<I``):
a request is ``voice TAB words-per-minute TAB pitch TAB amplitude TAB text``; a reply
is ``E`` and an error message, or ``K``, the sample rate in Hz and the number of
phoneme events (``<ii``), the events (``<8si`` each: the phoneme's mnemonic and its
first sample), then the audio (16-bit little-endian samples).

Standard library only (it runs with ``-S``, without site-packages): it starts fast.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import sys
from typing import Any

# The espeak_EVENT types we read, and the options we initialise with (speak_lib.h).
_LIST_TERMINATED = 0
_PHONEME = 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 1
_POS_CHARACTER = 1
# espeakCHARS_AUTO | espeakENDPAUSE: the flags the espeak-ng program passes.
_SYNTH_FLAGS = 0x1000
# espeak_PARAMETER: espeakRATE, espeakVOLUME, espeakPITCH.
_RATE, _VOLUME, _PITCH = 1, 2, 3


class Event(ctypes.Structure):
    """espeak_EVENT (speak_lib.h)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event)
)


def main() -> None:
    """Initialise the library, then answer requests until stdin closes."""
    lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS
    )
    if rate <= 0:
        sys.exit("espeak-ng's library failed to initialise")
    # Filled by the callback in the forked child only: empty at every fork.
    audio: list[bytes] = []
    events: list[bytes] = []

    def on_audio(wav: Any, n: int, ev: Any) -> int:
        if n > 0:
            audio.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while ev[i].type != _LIST_TERMINATED:
            if ev[i].type == _PHONEME:
                events.append(struct.pack("<8si", ev[i].id, ev[i].sample))
            i += 1
        return 0

    callback = SynthCallback(on_audio)  # referenced until the process ends
    lib.espeak_SetSynthCallback(callback)

    def say(request: bytes) -> bytes:
        voice, wpm, pitch, amplitude, text = request.decode().split("\t", 4)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            return b"E" + f"no voice {voice!r}".encode()
        for parameter, value in ((_RATE, wpm), (_VOLUME, amplitude), (_PITCH, pitch)):
            lib.espeak_SetParameter(parameter, int(value), 0)
        ctypes.CDLL(None).srand(1)  # the noise sources draw from libc's rand()
        data = text.encode()
        status = lib.espeak_Synth(
            data, len(data) + 1, 0, _POS_CHARACTER, 0, _SYNTH_FLAGS, None, None
        )
        lib.espeak_Synchronize()
        if status != 0 or not audio:
            return b"E" + f"synthesis failed (status {status})".encode()
        return b"K" + struct.pack("<ii", rate, len(events)) + b"".join(events + audio)

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            break
        request = stdin.read(struct.unpack("<I", header)[0])
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # a pristine copy of the initialised library
            os.close(read_end)
            with os.fdopen(write_end, "wb") as f:
                f.write(say(request))
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as f:
            reply = f.read()
        _, status = os.waitpid(pid, 0)
        reply = reply or b"E" + f"crashed (wait status {status})".encode()
        stdout.write(struct.pack("<I", len(reply)) + reply)
        stdout.flush()


if __name__ == "__main__":
    main()
