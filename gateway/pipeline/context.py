"""Stage 1: the request context (request id, start time, client address, user agent, the peer) and the
request's outcome (``gateway.outcome``) with the finish hooks every request gets."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import falcon

from gateway.logs import request_id as log_request_id
from gateway.observe.clientip import ClientAddress
from gateway.outcome import Outcome, new_inference_id
from gateway.server.peer import PEER_KEY

__all__ = ["ContextStage", "GatewayRequest", "RequestContext", "new_request_id"]

#: A client's X-Request-Id is echoed (and logged) only when it looks like an id; else a new one is made.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


_random_bits = random.getrandbits


def new_request_id() -> str:
    """A random (version 4) UUID string, as ``str(uuid.uuid4())`` in a tenth of the time.

    An id needs to be unique, not unguessable: the process's Mersenne Twister (reseeded from the OS
    in each forked worker) instead of a getrandom() system call per request.
    """
    h = f"{_random_bits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


class RequestContext:
    """What the stages learn about a request, passed along on ``req.context``."""

    __slots__ = (
        "request_id",
        "started",
        "peer",
        "client_ip",
        "proxy_chain",
        "user_agent",
        "body",
        "form",
        "model",
        "route",
        "stream",
        "error_format",
        "grants",
        "api_key_id",
        "user_id",
        "project_id",
        "endpoint_id",
        "model_id",
        "guardrail",
        "inference",
        "outcome",
    )

    def __init__(self) -> None:
        self.request_id = ""
        self.started = 0.0
        #: The ``server.peer.Peer`` at the other end (None outside the server, e.g. in tests).
        self.peer = None
        self.client_ip = ""
        #: The proxies the request came through (``X-Forwarded-For`` and the peer), when the peer is trusted.
        self.proxy_chain: str | None = None
        self.user_agent = ""
        #: The parsed JSON body of an inference request.
        self.body: dict[str, Any] | None = None
        #: The parsed ``providers.base.Form`` of a multipart request.
        self.form = None
        #: The model name exactly as the client sent it.
        self.model = ""
        #: The resolved ``routing.ModelRoute``.
        self.route = None
        #: The ``relay.SSEStream`` of a streamed answer, for stages that finish at its end.
        self.stream = None
        #: The error body shape the resource's clients expect: None (OpenAI's) or "anthropic".
        self.error_format = None
        #: With auth: the models the client's key may use (name -> ``stores.keys.ModelGrant``).
        self.grants = None
        # Who is asking, for limits and analytics (set by auth and resolve).
        self.api_key_id = None
        self.user_id = None
        self.project_id = None
        self.endpoint_id = None
        self.model_id = None
        #: The model's ``guard.guardrails.Guardrail`` (its profile), when it has one.
        self.guardrail = None
        #: A ``/inference`` request's plan (``tensorzero.inference.Plan``): its function and variants.
        self.inference = None
        #: The request's ``outcome.Outcome``.
        self.outcome: Outcome | None = None


class GatewayRequest(falcon.Request):
    context_type = RequestContext


class ContextStage:
    """``hooks`` are the finish hooks every request's outcome starts with (metrics, analytics, traces);
    ``clients`` finds the client address behind trusted proxies; ``capture``: keep streamed answers
    (bounded) for the analytics rows."""

    def __init__(self, hooks: Iterable[Callable[[Outcome], None]] = (), clients: ClientAddress | None = None,
                 *, capture: bool = False) -> None:
        self._hooks = tuple(hooks)
        self._clients = clients
        self._capture = capture

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = req.context
        started = ctx.started = time.monotonic()
        outcome = ctx.outcome = Outcome(new_inference_id(), started, time.time(), self._hooks)
        outcome.context = ctx
        outcome.method = req.method
        outcome.path = req.path
        request_id = req.get_header("x-request-id")
        if request_id is None or not _REQUEST_ID.fullmatch(request_id):
            request_id = new_request_id()
        ctx.request_id = request_id
        log_request_id.set(request_id)
        ctx.peer = req.env.get(PEER_KEY)
        peer = req.remote_addr or ""
        if self._clients is None:
            ctx.client_ip = peer
        else:
            ctx.client_ip, chain = self._clients.resolve(peer, req.env)
            ctx.proxy_chain = chain or None
        if self._capture:
            outcome.capture = []
        ctx.user_agent = req.user_agent or ""
        resp.set_header("x-request-id", request_id)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        # Whatever the method: a 405 on /v1/messages is answered in Anthropic's shape too.
        ctx = req.context
        ctx.error_format = getattr(resource, "error_format", None)
        ctx.outcome.recorded = getattr(resource, "record", True)
        capability = getattr(resource, "capability", None)
        if capability is not None:
            # Every answer of an inference route names its inference, errors included.
            ctx.outcome.endpoint_type = capability
            resp.set_header("x-tensorzero-inference-id", ctx.outcome.inference_id)
