"""SSE decoding of upstream bytes and the model-name rewrite of relayed chunks."""

import pytest
import ujson

from gateway.sse import DONE, ModelRewriter, error_event, frame
from providers.base import ProviderResponseError
from providers.sse import SSEDecoder


class TestSSEDecoder:
    def test_one_event_per_blank_line(self):
        d = SSEDecoder()
        assert d.feed(b"data: {}\n\ndata: [DONE]\n\n") == [(None, b"{}"), (None, b"[DONE]")]

    def test_event_split_across_reads(self):
        d = SSEDecoder()
        assert d.feed(b'data: {"a"') == []
        assert d.feed(b": 1}\n") == []
        assert d.feed(b"\n") == [(None, b'{"a": 1}')]

    def test_crlf_line_endings(self):
        d = SSEDecoder()
        assert d.feed(b"data: x\r") == []
        assert d.feed(b"\n\r\ndata: y\r\n\r\n") == [(None, b"x"), (None, b"y")]

    def test_named_events_and_multiline_data(self):
        d = SSEDecoder()
        events = d.feed(b"event: message_start\ndata: a\ndata: b\n\n")
        assert events == [(b"message_start", b"a\nb")]

    def test_comments_and_empty_blocks_are_skipped(self):
        d = SSEDecoder()
        assert d.feed(b": keep-alive\n\n\n\ndata:x\n\n") == [(None, b"x")]


class TestFraming:
    def test_frame(self):
        assert frame(b"{}") == b"data: {}\n\n"
        assert DONE == b"data: [DONE]\n\n"

    def test_error_event(self):
        raw = error_event({"error": {"message": "boom"}})
        assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
        assert ujson.loads(raw[6:]) == {"error": {"message": "boom"}}


class TestModelRewriter:
    def test_rewrites_to_the_client_model(self):
        rw = ModelRewriter("my-alias")
        out = rw(b'{"id":"1","model":"gpt-4o-2024","choices":[]}')
        assert ujson.loads(out)["model"] == "my-alias"

    def test_later_chunks_use_byte_replacement(self):
        rw = ModelRewriter("alias/x")
        rw(b'{"model":"up","choices":[]}')
        assert rw(b'{"model":"up","choices":[{"delta":{"content":"model"}}]}') == (
            b'{"model":"alias/x","choices":[{"delta":{"content":"model"}}]}'
        )
        assert rw(b'{"model": "up"}') == b'{"model": "alias/x"}'

    def test_same_name_is_left_untouched(self):
        rw = ModelRewriter("same")
        payload = b'{"model": "same", "x": 1}'
        assert rw(payload) is payload
        assert rw(payload) is payload

    def test_non_json_is_passed_through(self):
        assert ModelRewriter("a")(b"not json") == b"not json"

    def test_chunk_without_model(self):
        assert ModelRewriter("a")(b'{"choices":[]}') == b'{"choices":[]}'


class TestSSEDecoderLimits:
    def test_a_large_event_in_many_small_reads_arrives_whole(self):
        d = SSEDecoder()
        payload = b"x" * (2 * 1024 * 1024)
        raw = b"data: " + payload + b"\n\n"
        events = []
        for i in range(0, len(raw), 1024):
            events += d.feed(raw[i:i + 1024])
        assert events == [(None, payload)]

    def test_an_unterminated_event_over_the_cap_fails_the_attempt(self):
        d = SSEDecoder(max_event_bytes=1000)
        d.feed(b"data: " + b"x" * 900)
        with pytest.raises(ProviderResponseError):
            d.feed(b"x" * 200)

    def test_a_complete_event_over_the_cap_fails_the_attempt(self):
        with pytest.raises(ProviderResponseError):
            SSEDecoder(max_event_bytes=100).feed(b"data: " + b"x" * 200 + b"\n\n")

    def test_an_event_at_the_cap_is_accepted(self):
        d = SSEDecoder(max_event_bytes=106)
        assert d.feed(b"data: " + b"x" * 100 + b"\n\n") == [(None, b"x" * 100)]

    def test_blank_line_split_across_reads(self):
        d = SSEDecoder()
        assert d.feed(b"data: a\n") == []
        assert d.feed(b"\ndata: b\n\n") == [(None, b"a"), (None, b"b")]

    def test_lone_cr_ends_a_line(self):
        assert SSEDecoder().feed(b"data: a\r\rdata: b\r\r") == [(None, b"a"), (None, b"b")]

    def test_crlf_split_between_reads_is_one_line_end(self):
        d = SSEDecoder()
        assert d.feed(b"data: a\r\n\r") == [(None, b"a")]
        assert d.feed(b"\ndata: b\r\n\r\n") == [(None, b"b")]
