"""asr: a DeepSpeech2-style speech recognizer (see README.md).

``asr.CTCLoss`` and ``asr.ctc_loss`` are loaded on first use, so that importing the
package (``asr --help``, ``asr manifest``) does not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asr.ctc import CTCLoss, ctc_loss

__all__ = ["CTCLoss", "ctc_loss"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from asr import ctc

        return getattr(ctc, name)
    raise AttributeError(f"module 'asr' has no attribute {name!r}")
