"""The streaming mock upstream for benchmarks: a gevent server answering every POST with an SSE stream.

The request's ``model`` picks the stream: ``stream-N-D`` sends N chunk events D milliseconds apart
(the first at once), then ``[DONE]``. Run: ``python bench/mock_stream.py PORT``.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

__all__ = ["CHUNK", "app"]

CHUNK = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"mock",'
    b'"choices":[{"index":0,"delta":{"content":"token "},"finish_reason":null}]}\n\n'
)
_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]


class _Handler(WSGIHandler):
    def __init__(self, sock, address, server):
        # Without it, each small event waits for the reader's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server)


def app(environ, start_response):
    try:
        model = json.loads(environ["wsgi.input"].read() or b"{}").get("model", "")
        _, count, delay_ms = model.split("-")
        count, delay = int(count), float(delay_ms) / 1000.0
    except ValueError:
        start_response("400 Bad Request", [("Content-Type", "application/json")])
        return [b'{"error":{"message":"model must be stream-N-D","type":"invalid_request_error"}}']
    start_response("200 OK", _HEADERS)
    return _events(count, delay)


def _events(count, delay):
    for i in range(count):
        if i and delay:
            gevent.sleep(delay)
        yield CHUNK
    yield b"data: [DONE]\n\n"


def main():
    port = int(sys.argv[1])
    server = WSGIServer(("127.0.0.1", port), app, spawn=Pool(), log=None, handler_class=_Handler,
                        environ={"SERVER_NAME": "mock"}, backlog=4096)
    server.serve_forever()


if __name__ == "__main__":
    main()
