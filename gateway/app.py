"""Builds the Falcon app from a loaded config: collaborators, the pipeline in order, routes, error handlers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import falcon
import ujson

from gateway.anthropic_messages import error_json as anthropic_error_json
from gateway.catalog import Catalog
from gateway.config.loader import auth_enabled
from gateway.config.schema import Config
from gateway.errors import GatewayError, ProviderAnswerError, error_body
from gateway.guard.blocking import BlockingRules
from gateway.guard.guardrails import Guardrail, build_guardrails
from gateway.limits.limiter import RateLimiter
from gateway.limits.overrides import RateLimitOverrides
from gateway.limits.quotas import UsageConsumer, UsageTable
from gateway.observe.clientip import ClientAddress
from gateway.observe.geoip import GeoIP
from gateway.observe.metrics import Metrics
from gateway.observe.setup import Observers
from gateway.observe.setup import build as build_observers
from gateway.pipeline.auth import AuthStage
from gateway.pipeline.blocking import BlockingStage
from gateway.pipeline.context import ContextStage, GatewayRequest
from gateway.pipeline.guardrails import GuardrailStage
from gateway.pipeline.quota import QuotaStage
from gateway.pipeline.ratelimit import RateLimitStage
from gateway.pipeline.record import RecordStage
from gateway.pipeline.resolve import ResolveStage
from gateway.resources.batch import BatchInference
from gateway.resources.chat import ChatCompletions, Completions
from gateway.resources.feedback import Feedback
from gateway.resources.forward import AUDIO_FILE_LIMIT, FormForward, JSONForward
from gateway.resources.function_calls import FunctionCalls
from gateway.resources.health import Health, MetricsResource, Status
from gateway.resources.inference import Inference
from gateway.resources.messages import Messages
from gateway.resources.models import Models
from gateway.routing import Router
from gateway.stores.blocking import BlockingMirror
from gateway.stores.crypto import load_decryptor
from gateway.stores.guardrails import GuardrailMirror
from gateway.stores.keys import KeyTable
from gateway.stores.limits import RateLimitMirror
from gateway.stores.resp import RespClient
from gateway.stores.sync import Mirror, RedisSync, connect
from gateway.stores.usage import UsageMirror
from gateway.tensorzero.templates import Templates
from providers.base import Provider
from providers.credentials import Secret
from providers.http import UpstreamClient, UpstreamLimits, create_client
from providers.jsonio import NonFiniteNumberError, dumps

__all__ = ["GatewayApp", "create_app"]

log = logging.getLogger(__name__)

#: OpenAI's error ``type`` for each status a Falcon error may carry.
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
#: Our ``code`` for Falcon's own errors.
_CODES = {404: "unknown_url", 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type"}


class GatewayApp(falcon.App):
    """The Falcon app, and what its worker must close when it stops (the analytics writer, the usage
    consumer, the lease renewer)."""

    def __init__(self, observers: Observers, closers: list[Callable[[float], None]] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.observers = observers
        self._closers = closers or []

    def shutdown(self, timeout: float) -> None:
        """After the drain: send, flush or spool what is still queued, within ``timeout`` seconds."""
        for close in self._closers:
            close(timeout)
        self.observers.close(timeout)


def create_app(
    config: Config,
    registry: Mapping[str, type[Provider]],
    *,
    http: UpstreamClient | None = None,
    metrics: Metrics | None = None,
    redis_url: str | None = None,
) -> falcon.App:
    """Build the app and its collaborators; everything per-config is created here, once.

    With ``redis_url``, a background greenlet keeps keys, models and credentials in step with Redis.
    """
    settings = config.gateway
    if http is None:
        limits = UpstreamLimits(settings.max_upstream_body_bytes, settings.max_sse_event_bytes)
        http = create_client(settings.upstream_client, limits=limits)
    metrics = metrics if metrics is not None else Metrics(settings.metrics)
    credential_store: dict[str, Secret] = {}
    catalog = Catalog(config.models, registry, credential_store)
    router = Router(catalog, http)
    keys = KeyTable()
    for key_hash, grants in config.api_keys.items():
        keys.put(key_hash, ujson.dumps(dict(grants)))
    keys.loaded = not redis_url
    overrides = RateLimitOverrides()
    usage = UsageTable()
    mirrors: list[Mirror] = [RateLimitMirror(overrides)]
    usage_on = bool(redis_url) and settings.usage_limits.enabled is not False
    if usage_on:
        mirrors.append(UsageMirror(usage))
    elif settings.usage_limits.enabled:
        log.warning("gateway.usage_limits.enabled: there is no Redis (TENSORZERO_REDIS_URL) to read quotas from; "
                    "no quota applies")
    fast = None
    if redis_url:
        # The request path's own client (short timeouts, no retries): rate limits and rate-based blocking.
        fast = RespClient(redis_url, settings.redis_max_connections, settings.rate_limits.redis_timeout_ms / 1000)
    limiter, closers = _limiter(config, fast, metrics)
    blocking = None
    if settings.blocking.enabled:
        blocking = BlockingRules(settings.blocking.rules, fast)
        mirrors.append(BlockingMirror(blocking))
        closers.append(lambda timeout: blocking.close())
    guardrails = build_guardrails(config.guardrails, http, metrics.guardrail_failed, credential_store)
    sync = None
    if redis_url:
        decryptor = load_decryptor()
        mirrors.append(GuardrailMirror(
            guardrails, lambda p: Guardrail(p, http, metrics.guardrail_failed, credential_store), decryptor,
            credential_store))
        client = connect(redis_url, settings.redis_max_connections, settings.redis_timeout_s)
        sync = RedisSync(client, keys, catalog, credential_store, registry, decryptor, settings.resync_interval_s,
                         mirrors)
        sync.start()
    hooks = []
    if usage_on:
        consumer = UsageConsumer(RespClient(redis_url, 8, settings.redis_timeout_s), usage)
        hooks.append(consumer.finished)
        closers.append(consumer.close)

    observers = build_observers(config, metrics)
    clients = ClientAddress(settings.analytics.trusted_proxies)
    capture = observers.writer is not None and settings.observability.store_content
    stages = [ContextStage([*observers.hooks, *hooks], clients, capture=capture), *observers.stages,
              RecordStage(metrics.stream_opened)]
    country = _country_of(settings.analytics.geoip_db_path) if blocking is not None else None
    if blocking is not None:
        stages.append(BlockingStage(blocking, endpoint=False, country=country, counted=metrics.blocking_matched))
    if auth_enabled(config, redis_url):
        stages.append(AuthStage(keys))
    stages.append(ResolveStage(catalog, settings.max_body_bytes))
    if blocking is not None:
        stages.append(BlockingStage(blocking, endpoint=True, country=country, counted=metrics.blocking_matched))
    if usage_on:
        stages.append(QuotaStage(usage, fail_open=settings.usage_limits.fail_open, denied=metrics.limit_denied))
    if settings.rate_limits.enabled or config.rate_limiting.enabled and config.rate_limiting.rules:
        stages.append(RateLimitStage(limiter, settings.rate_limits, config.rate_limiting, overrides,
                                     denied=metrics.limit_denied))
    # NOTE: always there: a run-time model may name a profile, and one that is not loaded fails closed.
    stages.append(GuardrailStage(guardrails, settings.guardrails_window_chars))
    app = GatewayApp(observers, closers, request_type=GatewayRequest, middleware=stages)
    app.req_options.strip_url_path_trailing_slash = True

    tensorzero = config.tensorzero
    calls = FunctionCalls(router, catalog, tensorzero.functions if tensorzero is not None else {},
                          tensorzero.templates if tensorzero is not None else Templates())
    inference = {
        "/chat/completions": ChatCompletions(router, calls),
        "/completions": Completions(router),
        "/embeddings": JSONForward(router, "embedding", "/embeddings", ("input",)),
        "/moderations": JSONForward(router, "moderation", "/moderations", ("input",)),
        "/images/generations": JSONForward(router, "image_generation", "/images/generations", ("prompt",)),
        "/audio/speech": JSONForward(router, "text_to_speech", "/audio/speech", ("input", "voice"), always_stream=True),
        "/responses": JSONForward(router, "responses", "/responses", events=settings.max_sse_event_bytes),
        "/audio/transcriptions": FormForward(
            router, "audio_transcription", "/audio/transcriptions", ("file",), max_file_bytes=AUDIO_FILE_LIMIT
        ),
        "/audio/translations": FormForward(
            router, "audio_translation", "/audio/translations", ("file",), max_file_bytes=AUDIO_FILE_LIMIT
        ),
        "/images/edits": FormForward(router, "image_edit", "/images/edits", ("image", "prompt")),
        "/images/variations": FormForward(router, "image_variation", "/images/variations", ("image",)),
    }
    for prefix in ("/v1", "/openai/v1"):
        for path, resource in inference.items():
            app.add_route(prefix + path, resource)
    app.add_route("/v1/messages", Messages(router))
    app.add_route("/inference", Inference(calls))
    app.add_route("/feedback", Feedback(config, observers))
    batches = BatchInference(config, observers, router, catalog, calls.functions,
                             tensorzero.templates if tensorzero is not None else Templates(), http)
    closers.append(batches.close)  # the list the app holds: running batches stop, recorded, before rows flush
    app.add_route("/batch_inference", batches)
    app.add_route("/batch_inference/{batch_id}", batches, suffix="batch")
    app.add_route("/batch_inference/{batch_id}/inference/{inference_id}", batches, suffix="inference")
    models = Models(catalog)
    app.add_route("/v1/models", models)
    app.add_route("/v1/models/{model_id:path}", models, suffix="one")
    app.add_route("/health", Health(sync, observers.health))
    app.add_route("/status", Status())
    app.add_route("/metrics", MetricsResource(metrics))

    app.add_error_handler(Exception, _handle_unexpected)
    app.add_error_handler(NonFiniteNumberError, _handle_non_finite)
    app.add_error_handler(falcon.HTTPError, _handle_falcon_error)
    app.add_error_handler(GatewayError, _handle_gateway_error)
    return app


def _limiter(config: Config, client: RespClient | None, metrics: Metrics) -> tuple[RateLimiter, list]:
    """The rate limiter: on the request path's Redis client (``redis_timeout_ms``, no retries), or in-process."""
    settings = config.gateway.rate_limits
    if client is None and (settings.default_requests_per_minute or config.rate_limiting.rules or any(
            m.rate_limits is not None for m in config.models.values())):
        log.warning("rate limits: no Redis (TENSORZERO_REDIS_URL), so each gateway process limits itself "
                    "(a limit of N admits up to N per worker)")
    limiter = RateLimiter(client, fail_open=settings.fail_open, lease_ttl_s=settings.lease_ttl_s,
                          local_checked=metrics.rate_limit_checked_locally)
    limiter.load_scripts()
    return limiter, [lambda timeout: limiter.close()]


def _country_of(geoip_db_path: str | None) -> Callable[[str], str | None]:
    """The GeoIP country code of a client address (None without a database or for a private address)."""
    if not geoip_db_path:
        return lambda ip: None
    lookup = GeoIP(geoip_db_path, None).lookup
    return lambda ip: lookup(ip).country_code if ip else None


def _respond(req: falcon.Request, resp: falcon.Response, status: int, body: bytes, error_type: str,
             message: str, headers: Mapping[str, str] | None = None) -> None:
    outcome = req.context.outcome
    if outcome is not None:
        outcome.error_type = error_type
        outcome.error_message = message
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = body
    resp.stream = None
    if headers:
        resp.set_headers(headers)


def _error_bytes(req: falcon.Request, status: int, message: str, type_: str, code: str | None,
                 param: str | None = None) -> bytes:
    """The error body in the shape the route's clients expect (Anthropic's on /v1/messages,
    TensorZero's ``{"error": message}`` on its native routes)."""
    if req.context.error_format == "anthropic":
        return anthropic_error_json(message, status)
    if req.context.error_format == "tensorzero":
        return dumps({"error": message})
    return error_body(message, type_, code, param)


def _handle_gateway_error(req: falcon.Request, resp: falcon.Response, ex: GatewayError, params: dict) -> None:
    message = str(ex)
    body = _error_bytes(req, ex.status, message, ex.type, ex.code, ex.param)
    _respond(req, resp, ex.status, body, ex.code or ex.type, message, ex.headers)


def _handle_falcon_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict) -> None:
    status = ex.status_code
    if status == 404 and isinstance(ex, falcon.HTTPRouteNotFound):
        message = f"Invalid URL ({req.method} {req.path})"
    elif status == 405:
        message = f"Method {req.method} is not allowed on {req.path}"
    else:
        message = ex.description or ex.title or "request failed"
    type_ = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = _CODES.get(status)
    _respond(req, resp, status, _error_bytes(req, status, message, type_, code), code or type_, message, ex.headers)


def _handle_non_finite(req: falcon.Request, resp: falcon.Response, ex: NonFiniteNumberError, params: dict) -> None:
    # Only a provider's answer can carry one this far (a request's is refused before it is sent).
    log.warning("a provider's answer holds a number JSON cannot carry (NaN or infinity)")
    error = ProviderAnswerError("The provider's answer holds a number JSON cannot carry (NaN or Infinity)")
    _handle_gateway_error(req, resp, error, params)


def _handle_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
    log.exception("unexpected error in %s %s (request %s)", req.method, req.path, req.context.request_id)
    message = "The gateway failed to process the request."
    _respond(req, resp, 500, _error_bytes(req, 500, message, "server_error", "internal_error"), "internal_error", message)
