"""Stage 6: the user's usage quota, decided from the in-memory copy of ``usage_limit:{user_id}``
(never a Redis round trip); the request's consumption is added when it ends (``limits.quotas``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon

from gateway.errors import QuotaExceededError, ServiceUnavailableError
from gateway.limits.quotas import UsageTable

__all__ = ["QuotaStage"]


class QuotaStage:
    """``denied(model, code)`` counts each refusal."""

    def __init__(self, table: UsageTable, *, fail_open: bool,
                 denied: Callable[[str, str], None] | None = None) -> None:
        self._table = table
        self._fail_open = fail_open
        self._denied = denied or (lambda model, code: None)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        ctx = req.context
        user_id = ctx.user_id
        if not user_id or ctx.route is None:
            return
        table = self._table
        if not table.loaded and not self._fail_open:
            raise ServiceUnavailableError("Usage quotas are not available yet: the quota table is not loaded")
        reason = table.refusal(user_id)
        if reason is not None:
            self._denied(ctx.route.name, QuotaExceededError.code)
            raise QuotaExceededError(f"Usage quota exceeded: {reason}")
