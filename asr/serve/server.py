"""Running the application on uvicorn, and shutting it down without losing a final.

uvicorn's own shutdown closes every WebSocket at once (code 1012), which would cut
each open stream off before its last words. Here the first SIGTERM or SIGINT drains
first: no new stream is accepted, the open ones stop being read, the audio they
sent goes through the model, each gets its finals and a close with 1001, and only
then does uvicorn stop. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from types import FrameType

import uvicorn

from asr.serve.app import Service, create_app

__all__ = ["DRAIN_SECONDS", "is_loopback", "listen", "make_server", "run"]

log = logging.getLogger("asr.serve")

# The longest a shutdown waits for the open streams' finals.
DRAIN_SECONDS = 30.0
# Room above --max-message-bytes for the WebSocket layer's own limit: a larger
# message is read by the application and refused with a JSON error (1009); only a
# far larger one is cut by the protocol layer before it is buffered whole.
PROTOCOL_SLACK = 4


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1,
    ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self.draining = False
        self.drained = 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        dispatcher = self.service.dispatcher
        if self.draining or dispatcher is None or not self.started:
            super().handle_exit(sig, frame)
            return
        # Not recorded as uvicorn's captured signal: a drained shutdown is a clean
        # exit, not one uvicorn re-raises the signal for.
        self.draining = True
        loop = asyncio.get_event_loop()

        async def drain() -> None:
            self.drained = await dispatcher.drain(DRAIN_SECONDS)
            self.should_exit = True

        # A signal handler runs between two bytecodes of the loop's thread: the
        # drain is scheduled on the loop, not run here.
        loop.call_soon_threadsafe(lambda: loop.create_task(drain()))


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free one).

    Raises:
        OSError: the address cannot be used (in use, not this machine's, ...).
    """
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def make_server(service: Service) -> _DrainingServer:
    """The uvicorn server of ``service``'s application (:func:`run` runs it; tests
    run it in a thread)."""
    limits = service.options.streams
    config = uvicorn.Config(
        create_app(service),
        ws="websockets-sansio",
        ws_max_size=limits.max_message_bytes * PROTOCOL_SLACK,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        # The access log would print query strings, tokens included.
        access_log=False,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return _DrainingServer(config, service)


def run(service: Service, sock: socket.socket) -> int:
    """Serve on the listening ``sock`` (:func:`listen`) until a signal; return the
    number of streams given their finals by the shutdown's drain."""
    server = make_server(service)
    asyncio.run(server.serve(sockets=[sock]))
    return server.drained
