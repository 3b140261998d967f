"""The provider plug-in contract: requests, results, attempts, secrets and the ProviderError family."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from providers.jsonio import NonFiniteNumberError, dumps, loads

if TYPE_CHECKING:
    from gateway.config.schema import ProviderConfig
    from providers.credentials import Credential
    from providers.http import UpstreamClient

__all__ = [
    "Attempt",
    "ChatRequest",
    "ChatResult",
    "ChunkStream",
    "CredentialError",
    "FilePart",
    "Form",
    "ForwardRequest",
    "Forwarded",
    "Provider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderResponseError",
    "ProviderTimeout",
    "TRANSLATION_ERRORS",
    "json_object",
    "non_json_error",
    "request_json",
    "unexpected_shape",
]

#: What a streaming call yields: the JSON payload of each event (the bytes after ``data: ``),
#: in OpenAI's chat.completion.chunk shape. The stream ends at the upstream's ``[DONE]``; a provider
#: asks the upstream for usage whatever the client asked, so its last chunk carries ``usage`` when the
#: upstream reports it (the relay records it, and drops it for a client that did not ask for it).
ChunkStream = Iterator[bytes]


class ProviderError(Exception):
    """One failed attempt at a provider. Routing decides from ``retryable`` whether to move on.

    ``str(error)`` is the detail, for the gateway's log; ``public`` is all a client may read of it: a
    generic reason, never an address, a socket error or an upstream's own text.
    """

    retryable = True
    #: A short word for the attempt summary and metrics.
    kind = "error"
    #: The generic reason a client sees.
    reason = "provider error"

    def __init__(self, message: str, *, raw: bytes | None = None) -> None:
        super().__init__(message)
        # NOTE: the raw upstream body is kept for debug logs only, never shown to clients.
        self.raw = raw

    @property
    def public(self) -> str:
        return self.reason


class ProviderConnectionError(ProviderError):
    """The connection was refused, reset or broken, or the upstream spoke invalid HTTP."""

    kind = "connection"
    reason = "connection error"


class ProviderTimeout(ProviderError):
    """A configured timeout (total, time to first token, connect or read) ran out."""

    kind = "timeout"
    reason = "timeout"


class CredentialError(ProviderError):
    """The provider's credential could not be read; the attempt fails so the chain moves on."""

    kind = "credential"
    reason = "credential unavailable"


class ProviderResponseError(ProviderError):
    """The upstream answered 2xx with a body we cannot use."""

    kind = "bad_response"
    reason = "invalid response from provider"


class ProviderHTTPError(ProviderError):
    """The upstream answered an error status; the OpenAI-shaped fields are kept for the client.

    A client sees the provider's message only for a status that is the client's own error (a 4xx
    other than 429, passed through); for the others only ``public``.
    """

    kind = "http"

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        code: str | int | None = None,
        param: str | None = None,
        raw: bytes | None = None,
    ) -> None:
        super().__init__(message, raw=raw)
        self.status = status
        self.type = type_
        self.code = code
        self.param = param
        # A 429 or a 5xx is the provider's trouble (fallback); any other 4xx is the client's.
        self.retryable = status == 429 or status >= 500

    @property
    def public(self) -> str:
        return f"HTTP {self.status} from provider"

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


def non_json_error(status: int, raw: bytes) -> ProviderHTTPError:
    """An error answer whose body is not the provider's JSON (a proxy's HTML page, a stack trace): its
    text is kept in ``raw`` only, for debug logs, since it may name internal hosts."""
    detail = " with a body that is not JSON" if raw and raw.strip() else ""
    return ProviderHTTPError(status, f"upstream answered HTTP {status}{detail}", raw=raw)


#: What translating an upstream answer of an unexpected shape raises (a string where an object was
#: expected, a missing key...): caught where a translation is called and turned into ``unexpected_shape``.
TRANSLATION_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError)


def unexpected_shape(what: str, error: Exception) -> ProviderResponseError:
    """The attempt's failure when ``what`` (an answer, an event) could not be translated."""
    return ProviderResponseError(f"upstream {what} has an unexpected shape ({type(error).__name__}: {error})")


def json_object(raw: bytes) -> dict[str, Any]:
    """A successful answer's JSON object, or the ``ProviderResponseError`` that a bad one means.

    NOTE: a NaN or infinity in it (ujson reads both) is caught where it would be written out again
    (``jsonio.dumps`` raises; the app answers 502), so the common answer is not serialised twice.
    """
    try:
        body = loads(raw)
    except ValueError:
        raise ProviderResponseError("upstream answered with invalid JSON", raw=raw) from None
    if not isinstance(body, dict):
        raise ProviderResponseError("upstream answered with a JSON value that is not an object", raw=raw)
    return body


def request_json(body: Any) -> bytes:
    """A request body for the upstream, or the 400 the client gets when JSON cannot carry it."""
    try:
        return dumps(body)
    except NonFiniteNumberError:
        raise ProviderHTTPError(
            400, "The request holds a number JSON cannot carry (NaN, Infinity or beyond a double)",
            type_="invalid_request_error", code="invalid_number",
        ) from None


class ChatRequest:
    """An OpenAI-shaped chat (or legacy completions) request as the client sent it, parsed once.

    ``path`` is the OpenAI path it was sent to: ``/chat/completions``, or ``/completions`` for the
    legacy text completions, which OpenAI-wire providers serve and stream the same way.
    """

    __slots__ = ("body", "model", "stream", "include_usage", "path", "headers", "edits")

    def __init__(self, body: dict[str, Any], model: str, path: str = "/chat/completions",
                 headers: Mapping[str, str | None] | None = None, edits: tuple = ()) -> None:
        self.body = body
        self.model = model
        self.path = path
        #: Headers this request adds to the provider's (TensorZero's ``extra_headers``; None deletes one).
        self.headers = headers
        #: TensorZero's ``extra_body`` edits of this request: applied after the provider's own (a
        #: request's edits win over the config's), on the body as the provider will send it.
        self.edits = edits
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.include_usage = bool(self.stream and isinstance(options, dict) and options.get("include_usage"))


def with_headers(headers: Mapping[str, str], extra: Mapping[str, str | None] | None) -> Mapping[str, str]:
    """``headers`` with a request's own added (a None value takes the header out)."""
    if not extra:
        return headers
    merged = {**headers, **extra}
    return {k: v for k, v in merged.items() if v is not None}


class ChatResult:
    """A non-streaming answer: the OpenAI chat.completion object."""

    __slots__ = ("body",)

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body


class FilePart:
    """One file of a multipart form, read whole (at most once in memory)."""

    __slots__ = ("name", "filename", "content_type", "data")

    def __init__(self, name: str, filename: str, content_type: str, data: bytes) -> None:
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.data = data


class Form:
    """A multipart/form-data body: its text fields and its files, in the order they came."""

    __slots__ = ("fields", "files")

    def __init__(self, fields: list[tuple[str, str]], files: list[FilePart]) -> None:
        self.fields = fields
        self.files = files

    def get(self, name: str) -> str | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None


class ForwardRequest:
    """A request for an endpoint passed through in OpenAI's wire format (embeddings, audio, images, ...).

    Exactly one of ``json`` (a parsed JSON body) and ``form`` (a multipart form) is set.
    """

    __slots__ = ("capability", "path", "model", "json", "form", "stream")

    def __init__(
        self,
        capability: str,
        path: str,
        model: str,
        *,
        json: dict[str, Any] | None = None,
        form: Form | None = None,
        stream: bool = False,
    ) -> None:
        self.capability = capability
        self.path = path
        self.model = model
        self.json = json
        self.form = form
        #: Whether the answer is relayed as it arrives (SSE events, or audio bytes).
        self.stream = stream


class Forwarded:
    """The upstream's successful answer to a forwarded request: a whole body, or bytes as they arrive."""

    __slots__ = ("content_type", "body", "stream")

    def __init__(self, content_type: str, *, body: bytes | None = None, stream: Iterator[bytes] | None = None):
        self.content_type = content_type
        self.body = body
        #: Raw body bytes as they arrive; closing it settles the upstream connection.
        self.stream = stream


class Attempt:
    """One try of one provider: the upstream client adds the time spent waiting on the network; the
    caller (routing, then the relay for a stream) records when it ran and how it ended."""

    __slots__ = ("model", "provider", "provider_type", "upstream_s", "started", "started_at", "duration_s",
                 "first_byte_s", "result", "status_code", "error", "span_id", "headers", "row_id")

    def __init__(self, model: str, provider: str, started: float = 0.0, started_at: float = 0.0,
                 provider_type: str | None = None) -> None:
        self.model = model
        self.provider = provider
        self.provider_type = provider_type
        self.upstream_s = 0.0
        #: The attempt's trace span, and the headers the upstream client adds for it (``traceparent``).
        self.span_id: int | None = None
        self.headers: Mapping[str, str] | None = None
        #: The id of the attempt's ModelInference row, when an answer names it before the row is made.
        self.row_id: str | None = None
        #: ``time.monotonic()`` and Unix time at the start.
        self.started = started
        self.started_at = started_at
        self.duration_s = 0.0
        #: From the start to a stream's first piece.
        self.first_byte_s: float | None = None
        #: "ok", "http_<status>", "timeout", "connection", "bad_response", "credential", or "cut"
        #: (a stream that failed after its first piece).
        self.result = "ok"
        self.status_code: int | None = None
        #: Why it failed (the gateway's log detail, never shown to clients).
        self.error: str | None = None

    def failed(self, error: ProviderError, ended: float) -> None:
        self.duration_s = ended - self.started
        status = getattr(error, "status", None)
        self.result = f"http_{status}" if isinstance(status, int) else error.kind
        self.status_code = status
        self.error = str(error)


class Provider(abc.ABC):
    """A provider type. One instance per configured provider, built once per config load.

    Providers only translate and send: no Redis, auth, limits or metrics. They raise only
    ``ProviderError``. Timeouts are enforced around them by routing.
    """

    #: The ``type`` value in config that selects this class.
    type: ClassVar[str]
    #: Where the credential comes from when the config does not say.
    default_api_key_location: ClassVar[str] = "none"
    #: Provider-specific config keys this type accepts beyond the common ones.
    options: ClassVar[frozenset[str]] = frozenset()
    #: Whether ``api_base`` must be set, and the other names it may go by (azure's ``endpoint``).
    requires_api_base: ClassVar[bool] = False
    api_base_aliases: ClassVar[tuple[str, ...]] = ()
    #: Whether ``model_name`` must be set (TensorZero's azure and tgi need none).
    requires_model_name: ClassVar[bool] = True
    #: TensorZero's keys for this type that the gateway takes without acting on them.
    tensorzero_options: ClassVar[frozenset[str]] = frozenset()
    #: The capabilities (endpoint kinds) this type can serve.
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat"})

    def __init__(self, config: ProviderConfig, credential: Credential) -> None:
        self.config = config
        self.credential = credential

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Validate type-specific options; return ``(key, reason)`` pairs for what is wrong."""
        return [(key, f'unknown key for provider type "{cls.type}"') for key in options if key not in cls.options]

    @abc.abstractmethod
    def chat(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChatResult:
        """Answer a chat request whole."""

    @abc.abstractmethod
    def chat_stream(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChunkStream:
        """Answer a chat request as a stream of chunk payloads; closing it releases the upstream."""

    def forward(self, http: UpstreamClient, request: ForwardRequest, attempt: Attempt) -> Forwarded:
        """Pass a non-chat request through; only types whose ``capabilities`` list it are asked."""
        raise NotImplementedError(f'provider type "{self.type}" does not forward {request.capability}')

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.name!r} model={self.config.model_name!r}>"
