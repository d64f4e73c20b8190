"""The generator's exceptions: what the user must fix, and what one utterance lost."""

from __future__ import annotations

__all__ = ["CorpusError", "EngineMissingError", "SynthesisError"]


class CorpusError(Exception):
    """A user's mistake or an unusable environment: the message says what to fix."""


class EngineMissingError(CorpusError):
    """A text-to-speech program or voice the corpus needs is not installed."""


class SynthesisError(Exception):
    """One utterance could not be made (reported, left out, retried on a re-run)."""
