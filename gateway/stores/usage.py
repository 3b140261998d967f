"""The usage quotas' mirror: ``usage_limit:{user_id}`` into the ``limits.quotas.UsageTable``, and
``usage_limit_clear:{user_id}`` (budapp sets it at a billing-cycle reset) dropping the user's cached
entry for the one in Redis before it is deleted."""

from __future__ import annotations

import logging

import redis

from gateway.limits.quotas import PREFIX, UsageTable
from gateway.stores.sync import Mirror, reread, scan_values

__all__ = ["CLEAR_PREFIX", "UsageMirror"]

log = logging.getLogger(__name__)

CLEAR_PREFIX = "usage_limit_clear:"


class UsageMirror(Mirror):
    prefixes = (PREFIX, CLEAR_PREFIX)

    def __init__(self, table: UsageTable) -> None:
        self._table = table

    def load(self, client: redis.Redis) -> None:
        entries = scan_values(client, PREFIX + "*")
        self._table.replace_all({name[len(PREFIX):]: raw for name, raw in entries.items()})
        for name in scan_values(client, CLEAR_PREFIX + "*"):
            self._clear(client, name)

    def changed(self, client: redis.Redis, name: str, was_set: bool) -> None:
        if name.startswith(CLEAR_PREFIX):
            if was_set:
                self._clear(client, name)
            return
        user_id = name[len(PREFIX):]
        raw = reread(client, name) if was_set else None
        if raw is None:
            self._table.remove(user_id)
        else:
            self._table.put(user_id, raw)

    def _clear(self, client: redis.Redis, name: str) -> None:
        """Drop the user's cached entry, take the one in Redis now (budapp writes the new cycle's entry
        before the clear key), and delete the clear key."""
        user_id = name[len(CLEAR_PREFIX):]
        # NOTE: read first, then swap: no moment in which the user has no entry (and goes unmetered).
        raw = client.get(PREFIX + user_id)
        if raw is None:
            self._table.remove(user_id)
        else:
            self._table.put(user_id, raw)
        client.delete(name)
        log.info("usage quota of user %s cleared (a new billing cycle)", user_id)
