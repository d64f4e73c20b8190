"""The server's limits, each with its default (``asr serve``'s options)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["StreamLimits", "UploadLimits"]


@dataclass(frozen=True)
class StreamLimits:
    """What one client may do on ``WS /stream``; every limit has a default.

    Attributes:
        max_streams: open streams at once; one more is refused with 1013.
        max_message_bytes: the largest message (start, PCM frame or end).
        idle_timeout: seconds without a message before the stream is closed.
        max_messages_per_second: a client's sustained message rate (a token
            bucket holding a second's worth): a flood of tiny frames costs the
            server per message, not per second of audio.
        max_pending_seconds: audio received but not yet through the model; a
            client that sends faster than real time is read no further until the
            model catches up (TCP's flow control holds it back), so its buffer
            stays bounded.
        endpoint_seconds: trailing non-speech that ends a segment
            (:class:`asr.streaming.Session`).
    """

    max_streams: int = 64
    max_message_bytes: int = 128 * 1024
    idle_timeout: float = 30.0
    max_messages_per_second: float = 200.0
    max_pending_seconds: float = 10.0
    endpoint_seconds: float = 0.8

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_message_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be at least 1, got {getattr(self, name)}"
                )
        for name in (
            "idle_timeout",
            "max_messages_per_second",
            "max_pending_seconds",
            "endpoint_seconds",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value:g}")


@dataclass(frozen=True)
class UploadLimits:
    """``POST /transcribe``'s limits: bytes of the body and seconds of audio."""

    max_upload_bytes: int = 100 * 1024 * 1024
    max_upload_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1:
            raise ValueError(
                f"max_upload_bytes must be at least 1, got {self.max_upload_bytes}"
            )
        if not self.max_upload_seconds > 0:
            raise ValueError(
                f"max_upload_seconds must be positive, got {self.max_upload_seconds}"
            )
