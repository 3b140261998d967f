"""The multipart endpoints through the official SDK: audio transcriptions and translations with a real WAV
file, image edits and variations with a real PNG; malformed uploads; the 25 MiB audio limit."""

from __future__ import annotations

import base64
import http.client
import json
import select
import socket
import uuid

import openai
import pytest
from configs import model_toml, openai_provider
from media import png_bytes, wav_bytes
from upstream import TRANSCRIPT, TRANSLATION

MIB = 1024 * 1024
#: OpenAI's limit on audio uploads, which the gateway enforces.
AUDIO_LIMIT_BYTES = 25 * MIB
#: The oversized upload: its declared size, of which the client sends only ``HELD_BACK_BYTES`` less.
OVERSIZED_BYTES = 26 * MIB
#: What the client holds back of the oversized upload until the gateway has answered.
HELD_BACK_BYTES = 512 * 1024
UPLOAD_PIECE_BYTES = 64 * 1024
#: The chunk size of the small upload sent with chunked transfer coding.
CHUNK_BYTES = 4096
#: How long the client waits for the 413 while it holds the rest of the upload back.
ANSWER_TIMEOUT_S = 10.0

# The SDK marks translations and variations deprecated; their users still call them.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

AUDIO = ["audio_transcription", "audio_translation"]
IMAGES = ["image_edit", "image_variation"]
FORM_PATHS = ["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/images/edits",
              "/v1/images/variations"]
WAV = wav_bytes()
PNG = png_bytes()
MASK = png_bytes(rgba=(0, 0, 0, 0))


def _models(api_base: str) -> str:
    return "".join([
        model_toml("omni", {"primary": openai_provider("ok", api_base)}, endpoints=["chat", *AUDIO, *IMAGES]),
        model_toml("refusing", {"p": openai_provider("status-400", api_base)}, endpoints=[*AUDIO, *IMAGES]),
        model_toml("chat-only", {"p": openai_provider("ok", api_base)}),
        model_toml("flaky", {"failing": openai_provider("status-503", api_base),
                             "backup": openai_provider("ok", api_base)}, endpoints=[*AUDIO, *IMAGES]),
    ])


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, upstream_client):
    return module_gateway_factory(_models(upstream.url), settings={"upstream_client": upstream_client})


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


@pytest.fixture(scope="module")
def plain_gw(module_gateway_factory, upstream):
    """One gateway for tests of how uploads are read (framing, limits): they do not depend on the upstream
    client, so they run once, with the default one."""
    return module_gateway_factory(_models(upstream.url))


def _form(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body written by hand (RFC 7578), for requests the SDK would not send."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    for name, (filename, data, content_type) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _error(resp, status: int) -> dict:
    assert resp.status == status, resp
    return resp.json()["error"]


class TestTranscriptions:
    def test_json_format_returns_the_text(self, client):
        resp = client.audio.transcriptions.create(model="omni", file=("tone.wav", WAV, "audio/wav"))
        assert resp.text == TRANSCRIPT

    def test_file_bytes_and_fields_arrive_intact(self, client, upstream):
        client.audio.transcriptions.create(
            model="omni", file=("tone.wav", WAV, "audio/wav"), language="en", prompt="Grüße, a tone",
            response_format="verbose_json", temperature=0.2, timestamp_granularities=["word", "segment"])
        [rec] = upstream.requests
        assert rec.path == "/v1/audio/transcriptions"
        assert [(f.name, f.filename, f.content_type, f.data) for f in rec.form.files] == [
            ("file", "tone.wav", "audio/wav", WAV)]
        assert rec.form.getall("model") == ["ok"]
        assert (rec.form.get("language"), rec.form.get("prompt"), rec.form.get("response_format")) == (
            "en", "Grüße, a tone", "verbose_json")
        assert float(rec.form.get("temperature")) == 0.2
        assert rec.form.getall("timestamp_granularities[]") == ["word", "segment"]

    def test_binary_bytes_that_look_like_multipart_syntax_survive(self, client, upstream):
        tricky = wav_bytes(pcm=b"\r\n--\r\n\r\n--boundary--\r\n\0\xff" * 512)
        client.audio.transcriptions.create(model="omni", file=("tricky.wav", tricky, "audio/wav"))
        [rec] = upstream.requests
        assert rec.form.files[0].data == tricky

    def test_non_ascii_filename_and_multiline_field_survive(self, client, upstream):
        client.audio.transcriptions.create(model="omni", file=("tön 音.wav", WAV, "audio/wav"),
                                           prompt="first line\r\nsecond line")
        [rec] = upstream.requests
        assert rec.form.files[0].filename == "tön 音.wav"
        assert rec.form.get("prompt") == "first line\r\nsecond line"

    def test_upload_sent_with_chunked_transfer_coding_is_served(self, plain_gw, upstream):
        body, headers = _form({"model": "omni"}, {"file": ("tone.wav", WAV, "audio/wav")})
        conn = http.client.HTTPConnection("127.0.0.1", plain_gw.port, timeout=ANSWER_TIMEOUT_S)
        try:
            # No Content-Length: the body goes in chunks as it is produced (RFC 9112, section 7.1).
            pieces = (body[i:i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES))
            conn.request("POST", "/v1/audio/transcriptions", pieces, headers, encode_chunked=True)
            resp = conn.getresponse()
            status, answer = resp.status, resp.read()
        finally:
            conn.close()
        assert status == 200, answer
        assert json.loads(answer)["text"] == TRANSCRIPT
        assert upstream.requests[0].form.files[0].data == WAV

    def test_text_format_comes_back_as_plain_text(self, client):
        raw = client.audio.transcriptions.with_raw_response.create(
            model="omni", file=("tone.wav", WAV, "audio/wav"), response_format="text")
        assert raw.headers["content-type"].startswith("text/plain")
        assert raw.parse() == TRANSCRIPT + "\n"

    @pytest.mark.parametrize(("fmt", "expected"), [
        ("srt", f"1\n00:00:00,000 --> 00:00:00,250\n{TRANSCRIPT}\n\n"),
        ("vtt", f"WEBVTT\n\n00:00:00.000 --> 00:00:00.250\n{TRANSCRIPT}\n\n"),
    ])
    def test_subtitle_formats_come_back_as_plain_text(self, client, fmt, expected):
        raw = client.audio.transcriptions.with_raw_response.create(
            model="omni", file=("tone.wav", WAV, "audio/wav"), response_format=fmt)
        assert raw.headers["content-type"].startswith("text/plain")
        assert raw.http_response.text == expected

    def test_verbose_json_has_duration_segments_and_words(self, client):
        resp = client.audio.transcriptions.create(
            model="omni", file=("tone.wav", WAV, "audio/wav"), response_format="verbose_json",
            timestamp_granularities=["word"])
        assert resp.text == TRANSCRIPT
        assert resp.duration == pytest.approx(0.25)
        assert [s.text for s in resp.segments] == [TRANSCRIPT]
        assert [w.word for w in resp.words] == TRANSCRIPT.split()

    def test_answer_names_the_provider(self, client):
        raw = client.audio.transcriptions.with_raw_response.create(model="omni",
                                                                   file=("t.wav", WAV, "audio/wav"))
        assert raw.headers["x-budgateway-provider"] == "omni/primary"
        assert raw.headers["x-budgateway-attempts"] == "1"


class TestFallback:
    def test_the_next_provider_gets_the_same_form(self, client, upstream):
        raw = client.audio.transcriptions.with_raw_response.create(
            model="flaky", file=("tone.wav", WAV, "audio/wav"), language="en")
        assert raw.parse().text == TRANSCRIPT
        assert raw.headers["x-budgateway-provider"] == "flaky/backup"
        assert raw.headers["x-budgateway-attempts"] == "2"
        failed, served = upstream.requests
        assert (failed.form.get("model"), served.form.get("model")) == ("status-503", "ok")
        for rec in (failed, served):
            assert [(f.name, f.filename, f.data) for f in rec.form.files] == [("file", "tone.wav", WAV)]
            assert rec.form.get("language") == "en"


class TestTranslations:
    def test_json_format_returns_the_english_text(self, client, upstream):
        resp = client.audio.translations.create(model="omni", file=("tone.wav", WAV, "audio/wav"),
                                                prompt="a tone", temperature=0.0)
        assert resp.text == TRANSLATION
        [rec] = upstream.requests
        assert rec.path == "/v1/audio/translations"
        assert rec.form.files[0].data == WAV
        assert (rec.form.get("model"), rec.form.get("prompt")) == ("ok", "a tone")

    def test_text_format_comes_back_as_plain_text(self, client):
        resp = client.audio.translations.create(model="omni", file=("tone.wav", WAV, "audio/wav"),
                                                response_format="text")
        assert resp == TRANSLATION + "\n"


class TestImageEdits:
    def test_one_image_round_trips(self, client, upstream):
        resp = client.images.edit(model="omni", image=("square.png", PNG, "image/png"), prompt="make it blue",
                                  size="256x256")
        assert [d.b64_json for d in resp.data] == [_b64(PNG)]
        [rec] = upstream.requests
        assert rec.path == "/v1/images/edits"
        assert [(f.name, f.filename, f.content_type, f.data) for f in rec.form.files] == [
            ("image", "square.png", "image/png", PNG)]
        assert (rec.form.get("model"), rec.form.get("prompt"), rec.form.get("size")) == (
            "ok", "make it blue", "256x256")

    def test_several_images_and_a_mask_arrive_in_order(self, client, upstream):
        second = png_bytes(4, 4, (10, 200, 10, 255))
        images = [("a.png", PNG, "image/png"), ("b.png", second, "image/png")]
        resp = client.images.edit(model="omni", image=images, mask=("mask.png", MASK, "image/png"),
                                  prompt="blend them")
        assert [d.b64_json for d in resp.data] == [_b64(PNG), _b64(second)]
        [rec] = upstream.requests
        assert [(f.name, f.filename, f.data) for f in rec.form.files] == [
            ("image[]", "a.png", PNG), ("image[]", "b.png", second), ("mask", "mask.png", MASK)]


class TestImageVariations:
    def test_variations_of_the_uploaded_image(self, client, upstream):
        resp = client.images.create_variation(model="omni", image=("square.png", PNG, "image/png"), n=2)
        assert [d.b64_json for d in resp.data] == [_b64(PNG)] * 2
        [rec] = upstream.requests
        assert rec.path == "/v1/images/variations"
        assert [(f.name, f.data) for f in rec.form.files] == [("image", PNG)]
        assert (rec.form.get("model"), rec.form.get("n")) == ("ok", "2")


class TestBadUploads:
    @pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/audio/translations"])
    def test_missing_file_is_400_naming_file(self, plain_gw, upstream, path):
        body, headers = _form({"model": "omni", "response_format": "json"}, {})
        error = _error(plain_gw.request("POST", path, body, headers), 400)
        assert (error["code"], error["param"]) == ("missing_required_parameter", "file")
        assert upstream.requests == []

    @pytest.mark.parametrize(("fields", "files", "param"), [
        ({"model": "omni", "prompt": "p"}, {}, "image"),
        ({"model": "omni"}, {"image": ("a.png", PNG, "image/png")}, "prompt"),
    ])
    def test_image_edit_without_image_or_prompt_is_400_naming_it(self, plain_gw, fields, files, param):
        body, headers = _form(fields, files)
        error = _error(plain_gw.request("POST", "/v1/images/edits", body, headers), 400)
        assert (error["code"], error["param"]) == ("missing_required_parameter", param)

    def test_missing_model_is_400_naming_model(self, plain_gw):
        body, headers = _form({}, {"file": ("t.wav", WAV, "audio/wav")})
        error = _error(plain_gw.request("POST", "/v1/audio/transcriptions", body, headers), 400)
        assert (error["code"], error["param"]) == ("missing_required_parameter", "model")

    @pytest.mark.parametrize("path", FORM_PATHS)
    def test_json_body_where_a_form_is_needed_is_400(self, plain_gw, upstream, path):
        error = _error(plain_gw.request("POST", path, {"model": "omni", "file": "tone.wav"}), 400)
        assert error["type"] == "invalid_request_error"
        assert upstream.requests == []

    def test_truncated_form_is_400(self, plain_gw, upstream):
        body, headers = _form({"model": "omni"}, {"file": ("t.wav", WAV, "audio/wav")})
        error = _error(plain_gw.request("POST", "/v1/audio/transcriptions", body[:-200], headers), 400)
        assert error["type"] == "invalid_request_error"
        assert upstream.requests == []

    @pytest.mark.parametrize("capability", [*AUDIO, *IMAGES])
    def test_model_without_the_capability_is_400_unsupported_capability(self, client, capability):
        with pytest.raises(openai.BadRequestError) as exc_info:
            _call(client, capability, "chat-only")
        assert exc_info.value.code == "unsupported_capability"
        assert exc_info.value.body["message"] == f"Model chat-only does not support {capability}"

    @pytest.mark.parametrize("capability", [*AUDIO, *IMAGES])
    def test_unknown_model_is_404(self, client, capability):
        with pytest.raises(openai.NotFoundError) as exc_info:
            _call(client, capability, "no-such-model")
        assert exc_info.value.code == "model_not_found"

    @pytest.mark.parametrize("capability", [*AUDIO, *IMAGES])
    def test_provider_4xx_comes_back_with_its_message(self, client, capability):
        with pytest.raises(openai.BadRequestError) as exc_info:
            _call(client, capability, "refusing")
        assert exc_info.value.body["message"] == "upstream error 400"


class TestAudioUploadLimit:
    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    @pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/audio/translations"])
    def test_oversized_audio_gets_413_before_the_rest_is_sent(self, plain_gw, upstream, path, chunked):
        status, body = _send_oversized(plain_gw.port, path, chunked)
        assert status == 413, body
        error = json.loads(body)["error"]
        assert (error["code"], error["param"]) == ("request_too_large", "file")
        assert upstream.requests == []

    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    def test_gateway_serves_the_next_upload_after_a_413(self, plain_gw, chunked):
        _send_oversized(plain_gw.port, "/v1/audio/transcriptions", chunked)
        resp = plain_gw.openai().audio.transcriptions.create(model="omni", file=("t.wav", WAV, "audio/wav"))
        assert resp.text == TRANSCRIPT

    def test_audio_just_under_the_limit_is_served(self, plain_gw, upstream):
        big = wav_bytes(pcm=bytes(AUDIO_LIMIT_BYTES - len(wav_bytes(pcm=b""))))
        assert len(big) == AUDIO_LIMIT_BYTES
        resp = plain_gw.openai().audio.transcriptions.create(model="omni", file=("big.wav", big, "audio/wav"))
        assert resp.text == TRANSCRIPT
        assert upstream.requests[0].form.files[0].data == big


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _call(client, capability: str, model: str):
    if capability == "audio_transcription":
        return client.audio.transcriptions.create(model=model, file=("t.wav", WAV, "audio/wav"))
    if capability == "audio_translation":
        return client.audio.translations.create(model=model, file=("t.wav", WAV, "audio/wav"))
    if capability == "image_edit":
        return client.images.edit(model=model, image=("a.png", PNG, "image/png"), prompt="p")
    return client.images.create_variation(model=model, image=("a.png", PNG, "image/png"))


def _send_oversized(port: int, path: str, chunked: bool) -> tuple[int, bytes]:
    """Upload an ``OVERSIZED_BYTES`` audio file over a raw socket, holding its last ``HELD_BACK_BYTES`` back
    until the gateway answers; fails the test if no answer comes while they are held back.

    The body's length is declared up front, or it is sent with chunked transfer coding (RFC 9112, 7.1).
    """
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nomni\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    framing = ("Transfer-Encoding: chunked" if chunked
               else f"Content-Length: {len(head) + OVERSIZED_BYTES + len(tail)}")
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer test-key\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n\r\n").encode()

    def framed(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

    piece = framed(bytes(UPLOAD_PIECE_BYTES))
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S) as sock:
        sock.sendall(request + framed(head))
        sent = 0
        try:
            while sent < OVERSIZED_BYTES - HELD_BACK_BYTES:
                sock.sendall(piece)
                sent += UPLOAD_PIECE_BYTES
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered and closed while the upload was still coming: what we want
        readable, _, _ = select.select([sock], [], [], ANSWER_TIMEOUT_S)
        assert readable, f"no answer within {ANSWER_TIMEOUT_S} s while {HELD_BACK_BYTES} bytes were held back"
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.read()
