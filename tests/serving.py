"""Helpers of the server's tests: a server in a thread of the test process, or
`asr serve` as a child process, and small HTTP calls."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class Running:
    """A server listening on 127.0.0.1:``port``."""

    def __init__(self, port: int, service: Any = None, process: Any = None) -> None:
        self.port = port
        self.service = service
        self.process = process
        self.stderr: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    def request(
        self,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body; an HTTP error is returned, not raised."""
        req = urllib.request.Request(
            self.url + path, data=data, headers=headers or {}, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def json(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, _, body = self.request(path, **kwargs)
        return status, json.loads(body)


@contextmanager
def serving(options: Any) -> Iterator[Running]:
    """The application of ``options`` on uvicorn, in a thread of this process."""
    from asr.serve.app import Service
    from asr.serve.server import listen, make_server

    service = Service(options)
    sock = listen("127.0.0.1", 0)
    server = make_server(service)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "no start"
        time.sleep(0.01)
    try:
        yield Running(sock.getsockname()[1], service=service)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def serve_process(*args: str, env: dict[str, str] | None = None) -> Iterator[Running]:
    """``asr serve ARGS --port 0`` as a child process; its port from its stderr."""
    cmd = [sys.executable, "-m", "asr", "serve", *args, "--port", "0"]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO
    )
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if m := re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line):
                break
        else:
            raise AssertionError("asr serve did not start:\n" + "".join(lines))
        running = Running(int(m.group(1)), process=proc)
        running.stderr = lines
        # Keep reading, so that a chatty server never blocks on a full pipe.
        threading.Thread(target=lines.extend, args=(proc.stderr,), daemon=True).start()
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file, and its content type."""
    boundary = "asr-test-boundary-7d1f"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"
