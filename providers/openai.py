"""OpenAI and every OpenAI-compatible runtime (vLLM, SGLang, TGI, Bud): requests pass through as sent.

The helpers ``openai_error`` and ``stream_openai`` serve every provider that speaks OpenAI's wire format.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from providers.base import (
    Attempt,
    ChatRequest,
    ChatResult,
    ChunkStream,
    Forwarded,
    ForwardRequest,
    Provider,
    ProviderConnectionError,
    ProviderHTTPError,
    json_object,
    non_json_error,
    request_json,
    with_headers,
)
from providers.http import UpstreamClient, UpstreamStream
from providers.jsonio import loads
from providers.jsonpointer import apply_edits, apply_request_edits
from providers.multipart import encode_form
from providers.sse import SSEDecoder

__all__ = [
    "CAPABILITIES",
    "PATHS",
    "OpenAIProvider",
    "VLLMProvider",
    "SGLangProvider",
    "TGIProvider",
    "BudProvider",
    "openai_error",
    "stream_openai",
]

TYPE = "openai"
DEFAULT_API_BASE = "https://api.openai.com/v1"
#: Every capability, and the OpenAI path that serves it.
PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embedding": "/embeddings",
    "moderation": "/moderations",
    "audio_transcription": "/audio/transcriptions",
    "audio_translation": "/audio/translations",
    "text_to_speech": "/audio/speech",
    "image_generation": "/images/generations",
    "image_edit": "/images/edits",
    "image_variation": "/images/variations",
    "responses": "/responses",
}
_PATHS = tuple(PATHS.values())
CAPABILITIES = frozenset(PATHS)


def openai_error(status: int, raw: bytes) -> ProviderHTTPError:
    """Map an OpenAI-style error answer to ``ProviderHTTPError``, keeping the provider's message."""
    try:
        parsed = loads(raw) if raw else None
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        return ProviderHTTPError(
            status,
            message if isinstance(message, str) and message else f"upstream answered HTTP {status}",
            type_=error.get("type") if isinstance(error.get("type"), str) else None,
            code=error.get("code"),
            param=error.get("param") if isinstance(error.get("param"), str) else None,
            raw=raw,
        )
    if isinstance(error, str):
        return ProviderHTTPError(status, error, raw=raw)
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
        # FastAPI-based runtimes (vLLM's older versions, TGI) answer {"detail": "..."}.
        return ProviderHTTPError(status, parsed["detail"], raw=raw)
    return non_json_error(status, raw)


def parse_json_answer(status: int, raw: bytes) -> dict[str, Any]:
    """The JSON object of a successful answer, or the ProviderError that the answer means."""
    if status >= 400:
        raise openai_error(status, raw)
    return json_object(raw)


def stream_openai(upstream: UpstreamStream) -> ChunkStream:
    """Yield the payload of each event of an OpenAI-style SSE stream, up to ``[DONE]``.

    Reads on to the end of the body after ``[DONE]`` so the connection can go back to the pool.
    """
    try:
        if upstream.status >= 400:
            raise openai_error(upstream.status, upstream.read_all())
        decoder = SSEDecoder(upstream.max_event_bytes)
        first = True
        done = False
        for data in upstream:
            for _name, payload in decoder.feed(data):
                if done:
                    continue
                if payload == b"[DONE]":
                    done = True
                    continue
                if first:
                    first = False
                    if payload.startswith(b'{"error"'):
                        # An error before anything reached the client: a failed attempt, so fallback.
                        raise openai_error(502, payload)
                yield payload
        if not done:
            raise ProviderConnectionError("upstream stream ended before [DONE]")
    finally:
        upstream.close()


class OpenAIProvider(Provider):
    """The OpenAI API: the request body is forwarded as the client sent it, with the model renamed."""

    type = TYPE
    default_api_key_location = "env::OPENAI_API_KEY"
    default_api_base = DEFAULT_API_BASE
    capabilities = CAPABILITIES
    tensorzero_options = frozenset({"api_type", "include_encrypted_reasoning", "content_type_overrides",
                                    "provider_tools"})

    def __init__(self, config, credential) -> None:
        super().__init__(config, credential)
        self._base = config.api_base or self.default_api_base
        #: url per OpenAI path, built once (PERF: no string building per request).
        self._urls = {path: self._url(path) for path in _PATHS}
        # NOTE: a header set to None is one TensorZero's extra_headers deletes.
        headers = {"Content-Type": "application/json", **config.extra_headers}
        self._headers = {k: v for k, v in headers.items() if v is not None}
        self._extra_body = dict(config.extra_body)
        self._edits = config.body_edits

    def _url(self, path: str) -> str:
        """Where the OpenAI path (``/chat/completions``, ``/embeddings``, ...) is served."""
        return self._base + path

    def _auth(self, secret: str) -> tuple[str, str]:
        """The header that carries the credential."""
        return "Authorization", "Bearer " + secret

    def _request_headers(self, content_type: str | None = None) -> Mapping[str, str]:
        secret = self.credential.get()
        if secret is None and content_type is None:
            return self._headers
        headers = dict(self._headers)
        if secret is not None:
            name, value = self._auth(secret.reveal())
            headers[name] = value
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    def _json_body(self, body: dict[str, Any], *, stream_usage: bool = False, edits: tuple = ()) -> bytes:
        body = dict(body)
        body["model"] = self.config.model_name
        if stream_usage:
            # NOTE: usage is asked for on every stream (the gateway records it); the relay drops the
            # usage chunk again for a client that did not ask for it.
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        if self._extra_body:
            body.update(self._extra_body)
        if self._edits:
            apply_edits(body, self._edits)
        if edits:
            apply_request_edits(body, edits)
        return request_json(body)

    def chat(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChatResult:
        url = self._urls[request.path]
        status, raw = http.post(url, self._json_body(request.body, edits=request.edits), with_headers(self._request_headers(), request.headers),
                                attempt)
        return ChatResult(parse_json_answer(status, raw))

    def chat_stream(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChunkStream:
        url = self._urls[request.path]
        body = self._json_body(request.body, stream_usage=True, edits=request.edits)
        upstream = http.post_stream(url, body, with_headers(self._request_headers(), request.headers), attempt)
        return stream_openai(upstream)

    def forward(self, http: UpstreamClient, request: ForwardRequest, attempt: Attempt) -> Forwarded:
        if request.form is not None:
            overrides = {"model": self.config.model_name}
            overrides.update((k, str(v)) for k, v in self._extra_body.items())
            content_type, body = encode_form(request.form, overrides)
            headers = self._request_headers(content_type)
        else:
            body, headers = self._json_body(request.json), self._request_headers()
        upstream = http.post_stream(self._urls[request.path], body, headers, attempt)
        if upstream.status >= 400:
            raise openai_error(upstream.status, upstream.read_all())
        if request.stream or not upstream.content_type.startswith("application/json"):
            # NOTE: only a JSON answer is rewritten (its model renamed); any other (text, subtitles,
            # audio) is relayed as it arrives, however large, never held whole.
            return Forwarded(upstream.content_type, stream=_settled(upstream))
        return Forwarded(upstream.content_type, body=upstream.read_all())


def _settled(upstream: UpstreamStream) -> Iterator[bytes]:
    """The raw body as it arrives; closing the iterator (or its end) settles the connection."""
    try:
        yield from upstream
    finally:
        upstream.close()


class _SelfHosted(OpenAIProvider):
    """An OpenAI-compatible runtime you run: ``api_base`` is required and no key is sent by default."""

    default_api_key_location = "none"
    requires_api_base = True


class VLLMProvider(_SelfHosted):
    type = "vllm"


class SGLangProvider(_SelfHosted):
    type = "sglang"


class TGIProvider(_SelfHosted):
    type = "tgi"
    requires_model_name = False


class BudProvider(_SelfHosted):
    type = "bud"
