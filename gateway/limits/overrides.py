"""Rate limits the control plane publishes on ``rate_limit:config:{model}``, over the models' own.

``{model}`` is the model's endpoint id (its ``model_table`` name) or the name clients use for it.

A message is ``{"action": "create"|"update"|"delete", "config": {...}|null}``; ``config`` is a
``rate_limits`` object. It takes effect at once and holds until the next message for the model or
until the model's own entry changes (the newer word wins). A gateway started later reads the model
table, so the control plane writes the model table too.
"""

from __future__ import annotations

import logging

import ujson

from gateway.config.limits import rate_limits_json
from gateway.config.schema import RateLimits

__all__ = ["CHANNEL_PREFIX", "RateLimitOverrides"]

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "rate_limit:config:"


class RateLimitOverrides:
    def __init__(self) -> None:
        #: model -> its published limits (None: deleted, the defaults apply)
        self._by_model: dict[str, RateLimits | None] = {}

    def get(self, names: tuple[str, ...], own: RateLimits | None) -> RateLimits | None:
        """The limits of a model known by ``names`` (its endpoint id, the name the client used)."""
        by_model = self._by_model
        if by_model:
            for name in names:
                if name in by_model:
                    return by_model[name]
        return own

    def message(self, model: str, raw: bytes) -> None:
        where = f"{CHANNEL_PREFIX}{model}"
        try:
            data = ujson.loads(raw)
        except ValueError:
            log.warning("%s: a message that is not JSON; ignored", where)
            return
        action = data.get("action") if isinstance(data, dict) else None
        if action == "delete":
            self._by_model[model] = None
        elif action in ("create", "update") and isinstance(data.get("config"), dict):
            limits, errors = rate_limits_json(ujson.dumps(data["config"]), f"{where} config")
            if errors:
                log.warning("invalid rate limits ignored: %s", "; ".join(errors))
                return
            self._by_model[model] = limits
        else:
            log.warning("%s: expected {action: create|update|delete, config}; ignored", where)
            return
        log.info("rate limits of model %s: %s", model, action)

    def model_changed(self, model: str) -> None:
        self._by_model.pop(model, None)
