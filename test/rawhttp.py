"""A socket-level HTTP/1.1 client for tests: exact bytes out, every byte back, answers split apart.

``talk`` sends bytes (or timed pieces) on one new connection and reads until the server closes it or
goes quiet; ``parse`` splits what came back into answers (Content-Length or chunked bodies, 1xx
included), so a test can count them: a smuggled request would show as one answer too many.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass, field

__all__ = ["Answer", "Conversation", "StreamReader", "parse", "talk"]

#: How long a read waits for more bytes before the conversation counts as quiet.
QUIET_S = 2.0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> object:
        return json.loads(self.body)

    @property
    def error(self) -> dict:
        return self.json()["error"]


@dataclass
class Conversation:
    raw: bytes
    #: The server closed the connection (read returned EOF), rather than the read going quiet.
    closed: bool
    #: The connection was reset.
    reset: bool
    elapsed_s: float

    @property
    def answers(self) -> list[Answer]:
        return parse(self.raw)


def talk(port: int, *pieces: bytes | float, quiet_s: float = QUIET_S, shut_write: bool = False) -> Conversation:
    """Send ``pieces`` (a float is a pause of that many seconds) and read the answer(s)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=quiet_s)
    started = time.monotonic()
    out = bytearray()
    closed = reset = False
    try:
        for piece in pieces:
            if isinstance(piece, float):
                time.sleep(piece)
            else:
                try:
                    sock.sendall(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break  # the server closed first: read what it said
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                reset = True
                break
            if not data:
                closed = True
                break
            out += data
    finally:
        sock.close()
    return Conversation(bytes(out), closed, reset, time.monotonic() - started)


def parse(raw: bytes) -> list[Answer]:
    answers = []
    rest = raw
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"an incomplete answer head: {head[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        pairs = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        headers = {name.lower(): value for name, value in pairs}
        if 100 <= status < 200:
            answers.append(Answer(status, headers, b"", pairs))
            continue
        if headers.get("transfer-encoding") == "chunked":
            body = bytearray()
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:size]
                rest = rest[size + 2:]
            answers.append(Answer(status, headers, bytes(body), pairs))
        else:
            length = int(headers.get("content-length", len(rest)))
            answers.append(Answer(status, headers, rest[:length], pairs))
            rest = rest[length:]
    return answers


class StreamReader:
    """A streamed chat completion read event by event over http.client, to hold open across a signal."""

    def __init__(self, port: int, model: str, timeout_s: float = 30.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True})
        self.conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        self.events: list[str] = []

    def next_event(self) -> str | None:
        """The next ``data:`` payload, or None at the end of the body."""
        while line := self.resp.readline():
            if line.startswith(b"data:"):
                self.events.append(line[5:].strip().decode())
                return self.events[-1]
        return None

    def read_all(self) -> list[str]:
        while self.next_event() is not None:
            pass
        return self.events

    def close(self) -> None:
        self.conn.close()
