"""The HTTP/1.1 server at the socket: framing rules (no smuggling), size limits, timeouts, keep-alive.

Each test speaks raw bytes to a real gateway process and reads every byte back; a request hidden in
another's body would show as one answer too many.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from configs import dummy_provider, model_toml
from rawhttp import parse, talk

# Short timeouts, so the slow-client tests take seconds.
HEADER_TIMEOUT_S, BODY_TIMEOUT_S, KEEPALIVE_TIMEOUT_S = 1, 1, 2
SETTINGS = {"header_timeout_s": HEADER_TIMEOUT_S, "body_timeout_s": BODY_TIMEOUT_S,
            "keepalive_timeout_s": KEEPALIVE_TIMEOUT_S}
# A timeout must fire within its value and this margin (a busy two-core machine).
TIMEOUT_MARGIN_S = 1.5

BODY = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}).encode()
SMUGGLED = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def gw(module_gateway_factory):
    models = model_toml("echo", {"d": dummy_provider("echo")}) + model_toml("slow", {"d": dummy_provider("slow")})
    return module_gateway_factory(models, settings=SETTINGS)


def _refused(conversation, status: int, code: str) -> None:
    """One answer, the refusal, in OpenAI's error shape; then the server closed the connection."""
    answers = conversation.answers
    assert [a.status for a in answers] == [status], conversation.raw
    assert answers[0].error["code"] == code
    assert answers[0].headers["connection"] == "close"
    assert conversation.closed, "the server must close a connection whose framing it refused"


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


class TestNoSmuggling:
    def test_content_length_with_chunked_is_refused(self, gw):
        c = talk(gw.port, CHAT + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED)
        _refused(c, 400, "invalid_http")

    def test_two_different_content_lengths_are_refused(self, gw):
        c = talk(gw.port, CHAT + b"Content-Length: %d\r\nContent-Length: 3\r\n\r\n" % len(BODY) + BODY + SMUGGLED)
        _refused(c, 400, "invalid_http")

    def test_a_repeated_content_length_is_refused(self, gw):
        c = talk(gw.port, CHAT + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(BODY), len(BODY)) + BODY)
        _refused(c, 400, "invalid_http")

    @pytest.mark.parametrize("value", [b"+5", b"-5", b"5 5", b"0x10", b"5,5", b"\xd9\xa5"])
    def test_a_content_length_that_is_not_digits_is_refused(self, gw, value):
        c = talk(gw.port, CHAT + b"Content-Length: " + value + b"\r\n\r\n" + BODY)
        _refused(c, 400, c.answers[0].error["code"] if c.answers else "?")
        assert c.answers[0].error["code"] in ("invalid_http", "invalid_content_length")

    @pytest.mark.parametrize("coding", [b"gzip, chunked", b"chunked, chunked", b"identity", b"gzip", b"xchunked"])
    def test_a_transfer_encoding_other_than_chunked_is_refused(self, gw, coding):
        c = talk(gw.port, CHAT + b"Transfer-Encoding: " + coding + b"\r\n\r\n" + _chunked(BODY) + SMUGGLED)
        assert [a.status for a in c.answers] == [400], c.raw
        assert c.closed

    def test_two_transfer_encoding_headers_are_refused(self, gw):
        c = talk(gw.port, CHAT + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(BODY))
        assert [a.status for a in c.answers] == [400], c.raw
        assert c.closed

    def test_an_invalid_chunk_size_is_refused_and_its_rest_never_parsed(self, gw):
        c = talk(gw.port, CHAT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + SMUGGLED)
        _refused(c, 400, "invalid_http")

    def test_a_chunk_without_its_line_end_is_refused(self, gw):
        c = talk(gw.port, CHAT + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%sXX" % (len(BODY), BODY) + SMUGGLED)
        assert [a.status for a in c.answers] == [400], c.raw
        assert c.closed

    def test_an_endless_trailer_is_refused_not_buffered(self, gw):
        pieces = [CHAT + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: "] + [b"t" * 16384] * 16
        c = talk(gw.port, *pieces)
        assert [a.status for a in c.answers] == [400], c.raw[:300]
        assert c.closed
        assert gw.request("GET", "/health").status == 200

    def test_an_endless_chunk_extension_is_refused_not_buffered(self, gw):
        pieces = [CHAT + b"Transfer-Encoding: chunked\r\n\r\n2;ext="] + [b"e" * 16384] * 16
        c = talk(gw.port, *pieces)
        assert [a.status for a in c.answers] == [400], c.raw[:300]
        assert c.closed

    def test_http_1_0_with_transfer_encoding_is_answered_then_closed(self, gw):
        data = (b"POST /v1/chat/completions HTTP/1.0\r\nConnection: keep-alive\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(BODY) + SMUGGLED)
        c = talk(gw.port, data)
        assert [a.status for a in c.answers] == [200], c.raw[:300]
        assert c.closed

    def test_a_bad_chunk_after_good_ones_fails_the_body_and_closes(self, gw):
        half = len(BODY) // 2
        body = b"%x\r\n%s\r\n" % (half, BODY[:half])
        c = talk(gw.port, CHAT + b"Transfer-Encoding: chunked\r\n\r\n" + body, 0.2, b"nothex\r\n" + SMUGGLED)
        answers = c.answers
        assert [a.status for a in answers] == [400], c.raw
        assert answers[0].error["code"] in ("invalid_body", "invalid_http")
        assert c.closed

    def test_missing_host_on_http_1_1_is_refused(self, gw):
        _refused(talk(gw.port, b"GET /health HTTP/1.1\r\n\r\n"), 400, "invalid_host")

    def test_a_repeated_host_is_refused(self, gw):
        _refused(talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400, "invalid_host")

    def test_http_1_0_needs_no_host(self, gw):
        c = talk(gw.port, b"GET /health HTTP/1.0\r\n\r\n")
        assert [a.status for a in c.answers] == [200]

    def test_an_unknown_http_version_is_refused(self, gw):
        _refused(talk(gw.port, b"GET /health HTTP/2.0\r\nHost: a\r\n\r\n"), 505, "http_version_not_supported")

    def test_an_unknown_expectation_is_refused(self, gw):
        _refused(talk(gw.port, CHAT + b"Expect: teapot\r\nContent-Length: 2\r\n\r\n{}"), 417, "expectation_failed")

    def test_obsolete_line_folding_is_refused(self, gw):
        _refused(talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n"), 400, "invalid_http")

    @pytest.mark.parametrize("value", [b"a\rb", b"a\x00b", b"a\x7fb"])
    def test_control_characters_in_a_header_are_refused(self, gw, value):
        _refused(talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\nX-Request-Id: " + value + b"\r\n\r\n"),
                 400, "invalid_http")

    def test_garbage_gets_400_and_a_close(self, gw):
        _refused(talk(gw.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 400, "invalid_http")

    def test_an_error_on_v1_messages_takes_anthropics_shape(self, gw):
        c = talk(gw.port, b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}")
        answer = c.answers[0]
        assert answer.status == 400
        assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == "invalid_request_error"


class TestSizeLimits:
    def test_a_request_line_over_8_kib_is_414(self, gw):
        _refused(talk(gw.port, b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: a\r\n\r\n"), 414, "uri_too_long")

    def test_a_request_line_under_8_kib_is_served(self, gw):
        c = talk(gw.port, b"GET /health?" + b"a" * 8000 + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert [a.status for a in c.answers] == [200]

    def test_a_header_over_8_kib_is_431(self, gw):
        c = talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 8300 + b"\r\n\r\n")
        _refused(c, 431, "headers_too_large")

    def test_more_than_100_headers_is_431(self, gw):
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(100))
        _refused(talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n"), 431, "headers_too_large")

    def test_100_headers_are_served(self, gw):
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(98))
        c = talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + many + b"\r\n")
        assert [a.status for a in c.answers] == [200]

    def test_a_head_over_64_kib_is_431(self, gw):
        fields = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 8000) for i in range(9))
        _refused(talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"), 431, "headers_too_large")

    def test_an_endless_header_line_is_431_not_buffered(self, gw):
        # Refused once what is buffered of the head passes 64 KiB beyond the read it began in.
        pieces = [b"GET /health HTTP/1.1\r\nHost: a\r\nX-Endless: "] + [b"e" * 16384] * 16
        c = talk(gw.port, *pieces)
        assert [a.status for a in c.answers] == [431], c.raw[:300]


class TestTimeouts:
    def test_a_head_that_stalls_gets_408_then_a_close(self, gw):
        c = talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\n", quiet_s=HEADER_TIMEOUT_S + TIMEOUT_MARGIN_S + 1)
        _refused(c, 408, "request_timeout")
        assert c.elapsed_s < HEADER_TIMEOUT_S + TIMEOUT_MARGIN_S

    def test_a_trickled_head_is_cut_at_the_header_timeout(self, gw):
        pieces = [b"GET /health HTTP/1.1\r\nHost: a\r\n"] + [b"X-Slow: 1\r\n", 0.2] * 20
        c = talk(gw.port, *pieces)
        assert [a.status for a in c.answers] == [408]
        assert c.elapsed_s < 20 * 0.2, "the deadline is for the whole head, not each read"

    def test_a_silent_new_connection_is_closed_without_an_answer(self, gw):
        c = talk(gw.port, quiet_s=HEADER_TIMEOUT_S + TIMEOUT_MARGIN_S + 1)
        assert c.raw == b"" and c.closed
        assert c.elapsed_s < HEADER_TIMEOUT_S + TIMEOUT_MARGIN_S

    def test_a_stalled_body_gets_408_in_openai_shape(self, gw):
        c = talk(gw.port, CHAT + b"Content-Length: 500\r\n\r\n" + BODY[:20],
                 quiet_s=BODY_TIMEOUT_S + TIMEOUT_MARGIN_S + 1)
        _refused(c, 408, "request_timeout")
        assert c.answers[0].error["type"] == "invalid_request_error"

    def test_an_idle_keepalive_connection_is_closed_after_the_keepalive_timeout(self, gw):
        c = talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n", quiet_s=KEEPALIVE_TIMEOUT_S + TIMEOUT_MARGIN_S + 1)
        assert [a.status for a in c.answers] == [200]
        assert c.closed
        assert KEEPALIVE_TIMEOUT_S - 0.2 < c.elapsed_s < KEEPALIVE_TIMEOUT_S + TIMEOUT_MARGIN_S


class TestKeepAlive:
    def test_pipelined_requests_are_answered_in_order(self, gw):
        ids = [f"pipelined-{i}" for i in range(5)]
        data = b"".join(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Request-Id: %s\r\n\r\n" % i.encode() for i in ids)
        data += CHAT + b"Content-Length: %d\r\nX-Request-Id: last\r\nConnection: close\r\n\r\n" % len(BODY) + BODY
        answers = talk(gw.port, data).answers
        assert [a.headers["x-request-id"] for a in answers] == [*ids, "last"]
        assert [a.status for a in answers] == [200] * 6

    def test_a_pipelined_request_waiting_behind_a_slow_one_is_not_timed_out(self, gw):
        slow = json.dumps({"model": "slow", "messages": [{"role": "user", "content": "hi"}]}).encode()
        first = CHAT + b"Content-Length: %d\r\n\r\n" % len(slow) + slow
        # The second request's first bytes arrive with the first; the rest comes while the first is served.
        c = talk(gw.port, first + b"GET /health HTTP/1.1\r\n", 0.1,
                 b"Host: a\r\nConnection: close\r\n\r\n", quiet_s=5.0)
        assert [a.status for a in c.answers] == [200, 200], c.raw[-400:]

    def test_many_requests_share_one_connection(self, gw):
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            for i in range(10):
                sock.sendall(CHAT + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
                raw = b""
                while not (raw and parse_complete(raw)):
                    raw += sock.recv(65536)
                assert parse(raw)[0].status == 200, i
        finally:
            sock.close()

    def test_a_chunked_request_body_is_read(self, gw):
        c = talk(gw.port, CHAT + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + _chunked(BODY))
        answer = c.answers[0]
        assert answer.status == 200
        assert answer.json()["choices"][0]["message"]["content"] == "hi"

    def test_a_chunked_body_in_many_chunks_with_extensions_and_trailers(self, gw):
        pieces = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(BODY[i:i + 7]), BODY[i:i + 7]) for i in range(0, len(BODY), 7))
        body = pieces + b"0\r\nX-Trailer: t\r\n\r\n"
        c = talk(gw.port, CHAT + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body)
        assert [a.status for a in c.answers] == [200], c.raw

    def test_expect_100_continue_gets_100_then_the_answer(self, gw):
        head = CHAT + b"Expect: 100-continue\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY)
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            sock.sendall(head)
            assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(BODY)
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        finally:
            sock.close()
        assert [a.status for a in parse(raw)] == [200]

    def test_http_1_0_gets_no_100_continue(self, gw):
        data = (b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % len(BODY))
        c = talk(gw.port, data, 0.3, BODY)
        assert [a.status for a in c.answers] == [200], c.raw[:200]

    def test_http_1_0_keepalive_is_honoured(self, gw):
        data = b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2
        c = talk(gw.port, data, quiet_s=0.5)
        answers = c.answers
        assert [a.status for a in answers] == [200, 200]
        assert answers[0].headers["connection"] == "keep-alive"

    def test_connection_close_is_honoured(self, gw):
        c = talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + SMUGGLED)
        assert [a.status for a in c.answers] == [200]
        assert c.closed

    def test_a_streamed_answer_is_chunked(self, gw):
        body = json.dumps({"model": "echo", "stream": True, "messages": [{"role": "user", "content": "a b c"}]})
        c = talk(gw.port, CHAT + b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body.encode()))
        answer = c.answers[0]
        assert answer.headers["transfer-encoding"] == "chunked"
        assert answer.body.endswith(b"data: [DONE]\n\n")

    def test_head_requests_get_no_body(self, gw):
        c = talk(gw.port, b"HEAD /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert c.raw.endswith(b"\r\n\r\n"), c.raw


class TestBodies:
    def test_a_client_that_aborts_its_upload_is_dropped_quietly(self, gw):
        talk(gw.port, CHAT + b"Content-Length: 5000\r\n\r\n" + BODY[:30], shut_write=True, quiet_s=2)
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=2)
        sock.sendall(CHAT + b"Content-Length: 5000\r\n\r\n" + BODY[:30])
        sock.close()
        assert gw.request("GET", "/health").status == 200
        time.sleep(0.2)
        assert "Traceback" not in gw.log()

    def test_an_unread_body_does_not_become_a_request(self, gw):
        # 404 before the body is read: its bytes must not be taken for the smuggled request.
        c = talk(gw.port, b"POST /v1/nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED),
                 0.3, SMUGGLED)
        assert [a.status for a in c.answers] == [404], c.raw


class TestMaxConnections:
    def test_a_full_worker_keeps_serving_its_connections_and_queues_new_ones(self, gateway_factory):
        gw = gateway_factory(model_toml("echo", {"d": dummy_provider("echo")}), settings={"max_connections": 2})
        held = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
                assert parse_status(sock) == 200
            waiting = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            waiting.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            waiting.settimeout(0.5)
            with pytest.raises(socket.timeout):
                waiting.recv(1)
            # The connections it holds are served while the new one waits.
            held[0].sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            assert parse_status(held[0]) == 200
            held[1].close()
            waiting.settimeout(5)
            assert parse_status(waiting) == 200
            waiting.close()
        finally:
            for sock in held:
                sock.close()


def parse_complete(raw: bytes) -> bool:
    try:
        return bool(parse(raw))
    except (ValueError, IndexError):
        return False


def parse_status(sock: socket.socket) -> int:
    raw = b""
    while not parse_complete(raw):
        data = sock.recv(65536)
        if not data:
            break
        raw += data
    return parse(raw)[0].status
