"""The gateway's error hierarchy and its OpenAI-shaped JSON form."""

from __future__ import annotations

from providers.jsonio import dumps

__all__ = [
    "AuthenticationError",
    "BlockedError",
    "ClientClosedError",
    "ConcurrencyLimitError",
    "ContentFilterError",
    "GatewayError",
    "InvalidRequestError",
    "InvalidJSONError",
    "MissingParameterError",
    "ProviderAnswerError",
    "QuotaExceededError",
    "RateLimitError",
    "ModelNotFoundError",
    "UnsupportedCapabilityError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "error_body",
]


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    """Serialise one error in the shape the OpenAI API and SDK use."""
    return dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


class GatewayError(Exception):
    """An error a client sees; subclasses carry the HTTP status, OpenAI type and code."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
        type_: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.param = param
        self.headers = headers
        # Instances may override the class defaults, e.g. a provider's 4xx passed through.
        if status is not None:
            self.status = status
        if type_ is not None:
            self.type = type_
        if code is not None:
            self.code = code

    def to_dict(self) -> dict:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}

    def to_bytes(self) -> bytes:
        return error_body(str(self), self.type, self.code, self.param)


class InvalidRequestError(GatewayError):
    status, type, code = 400, "invalid_request_error", None


class InvalidJSONError(InvalidRequestError):
    code = "invalid_json"


class MissingParameterError(InvalidRequestError):
    code = "missing_required_parameter"

    def __init__(self, param: str) -> None:
        super().__init__(f"Missing required parameter: '{param}'", param=param)


class AuthenticationError(GatewayError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class ModelNotFoundError(GatewayError):
    status, type, code = 404, "invalid_request_error", "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"Model not found: {model}", param="model")


class UnsupportedCapabilityError(InvalidRequestError):
    code = "unsupported_capability"

    def __init__(self, model: str, capability: str) -> None:
        super().__init__(f"Model {model} does not support {capability}", param="model")


class RequestTooLargeError(GatewayError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class ServiceUnavailableError(GatewayError):
    status, type, code = 503, "server_error", "service_unavailable"


class RequestTimeoutError(GatewayError):
    """The request body stalled for longer than ``[gateway] body_timeout_s``."""

    status, type, code = 408, "invalid_request_error", "request_timeout"


class ClientClosedError(GatewayError):
    """The client went away before its answer began (nginx's 499): nothing more is done for it."""

    status, type, code = 499, "invalid_request_error", "client_closed_request"


class ProviderAnswerError(GatewayError):
    """The provider answered, but with something that cannot be translated for the client."""

    status, type, code = 502, "server_error", "invalid_provider_response"


class RateLimitError(GatewayError):
    """Over a rate limit, before any upstream call; ``headers`` carry Retry-After and the limit's state."""

    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class ConcurrencyLimitError(RateLimitError):
    code = "concurrency_limit_exceeded"


class QuotaExceededError(GatewayError):
    """The user's usage quota (budapp's ``usage_limit:{user_id}``) is spent or not allowed."""

    status, type, code = 402, "insufficient_quota", "insufficient_quota"


class BlockedError(GatewayError):
    """A blocking rule refused the client (its reason in the message and in ``x-block-reason``)."""

    status, type, code = 403, "permission_error", "blocked"


class ContentFilterError(InvalidRequestError):
    """An input guardrail blocked the request: the upstream never sees it."""

    code = "content_filter"
