"""The published rate limits' mirror: messages on ``rate_limit:config:{model}`` into the
``limits.overrides.RateLimitOverrides``; a change of the model's own entry ends its override."""

from __future__ import annotations

import redis

from gateway.limits.overrides import CHANNEL_PREFIX, RateLimitOverrides
from gateway.stores.sync import MODEL_PREFIX, Mirror

__all__ = ["RateLimitMirror"]


class RateLimitMirror(Mirror):
    prefixes = (MODEL_PREFIX,)
    channels = (CHANNEL_PREFIX + "*",)

    def __init__(self, overrides: RateLimitOverrides) -> None:
        self._overrides = overrides

    def changed(self, client: redis.Redis, name: str, was_set: bool) -> None:
        self._overrides.model_changed(name[len(MODEL_PREFIX):])

    def message(self, channel: str, data: bytes) -> None:
        self._overrides.message(channel[len(CHANNEL_PREFIX):], data)
