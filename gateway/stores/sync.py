"""Keeping the key table, the run-time models and the credential store in step with Redis, and the
mirrors of other state (usage quotas, published rate limits) beside them.

At start: SCAN ``api_key:*``, ``model_table:*`` and ``published_model_info``, and each mirror loads. Then keyspace
notifications (``__keyevent@{db}__:set``, ``:expire``, ``:persist``, ``:del``, ``:expired``) apply
each change within a second,
and a full resync every ``resync_interval_s`` catches anything a notification missed. While Redis
is unreachable the last loaded state keeps serving; reconnects back off from 1 s to 60 s and end
in a full resync. Runs in a background greenlet of each worker. A ``Mirror`` names the key prefixes
whose changes it takes and the pub/sub channel patterns it listens to.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping

import gevent
import redis

from gateway.catalog import Catalog
from gateway.config.schema import ModelConfig
from gateway.loop import yield_to_loop
from gateway.stores.crypto import CredentialDecryptor
from gateway.stores.keys import ApiKey, KeyTable
from gateway.stores.models import parse_model_entry, store_name
from providers.base import Provider
from providers.credentials import Secret

__all__ = ["Mirror", "RedisSync", "connect", "reread", "scan_values"]


log = logging.getLogger(__name__)

KEY_PREFIX = "api_key:"
MODEL_PREFIX = "model_table:"
PUBLISHED = "published_model_info"
_SCAN_BATCH = 500
#: A set event can arrive a moment before the value is readable through another connection.
_REREAD_TRIES, _REREAD_PAUSE_S = 3, 0.05
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 1.0, 60.0
#: set: a new value; expire/persist: a TTL set or removed (a key's expiry); del/expired: gone.
_EVENTS = ("set", "expire", "persist", "del", "expired")
_REREAD_EVENTS = (b"set", b"expire", b"persist")
#: How long one wait for a notification lasts (bounds how late a resync can start).
_POLL_S = 1.0


def connect(url: str, max_connections: int, timeout_s: float) -> redis.Redis:
    """A client whose pool blocks (up to ``timeout_s``) instead of failing when all connections are busy."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s, health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


def scan_values(client: redis.Redis, pattern: str) -> dict[str, bytes]:
    """Every key matching ``pattern`` and its value (SCAN, then MGET in batches; never KEYS)."""
    found: dict[str, bytes] = {}
    batch: list[bytes] = []

    def fetch() -> None:
        for key, raw in zip(batch, client.mget(batch), strict=True):
            if raw is not None:
                found[key.decode()] = raw
        batch.clear()

    for key in client.scan_iter(match=pattern, count=_SCAN_BATCH):
        batch.append(key)
        if len(batch) >= _SCAN_BATCH:
            fetch()
    if batch:
        fetch()
    return found


def reread(client: redis.Redis, name: str) -> bytes | None:
    """The value of a key just set (a set event can arrive a moment before another connection sees it)."""
    for _ in range(_REREAD_TRIES):
        raw = client.get(name)
        if raw is not None:
            return raw
        gevent.sleep(_REREAD_PAUSE_S)
    return None


class Mirror:
    """State kept in memory beside the keys and models: a full ``load``, then ``changed`` for each key
    under one of ``prefixes`` that was set (``was_set``) or removed, and ``message`` for each message
    on a channel matching one of ``channels``."""

    prefixes: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()

    def load(self, client: redis.Redis) -> None:
        pass

    def changed(self, client: redis.Redis, name: str, was_set: bool) -> None:
        pass

    def message(self, channel: str, data: bytes) -> None:
        pass


class RedisSync:
    """The background greenlet that mirrors Redis into the key table, catalog and credential store."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeyTable,
        catalog: Catalog,
        store: MutableMapping[str, Secret],
        registry: Mapping[str, type[Provider]],
        decryptor: CredentialDecryptor,
        resync_interval_s: float,
        mirrors: Iterable[Mirror] = (),
    ) -> None:
        self._client = client
        self._keys = keys
        self._catalog = catalog
        self._store = store
        self._registry = registry
        self._decryptor = decryptor
        self._resync_s = resync_interval_s
        self._mirrors = tuple(mirrors)
        self._channels = tuple(p for m in self._mirrors for p in m.channels)
        self._db = client.connection_pool.connection_kwargs.get("db", 0)
        self._greenlet: gevent.Greenlet | None = None
        self._seen_ciphertexts: set[str] = set()
        #: The credential store's names the model table put there.
        self._model_secrets: set[str] = set()
        #: "starting", "ok" or "error": what /health reports.
        self.status = "starting"

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        delay = _BACKOFF_MIN_S
        while True:
            try:
                self._serve_forever()
            except (redis.RedisError, OSError) as e:
                self.status = "error"
                log.warning("redis unreachable (%s); serving the last loaded state, retrying in %.0f s",
                            type(e).__name__, delay)
                gevent.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
            else:
                delay = _BACKOFF_MIN_S

    def _serve_forever(self) -> None:
        client = self._client
        self._check_notifications(client)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            # Subscribed before the load, so no change between the two is missed.
            pubsub.psubscribe(*(f"__keyevent@{self._db}__:{event}" for event in _EVENTS), *self._channels)
            self.load_all()
            self.status = "ok"
            next_resync = time.monotonic() + self._resync_s
            while True:
                message = pubsub.get_message(timeout=_POLL_S)
                if message is not None and message.get("type") == "pmessage":
                    channel = message["channel"]
                    if channel.startswith(b"__keyevent@"):
                        self._on_event(channel, message["data"])
                    else:
                        self._on_message(channel.decode(errors="replace"), message["data"])
                if time.monotonic() >= next_resync:
                    self.load_all()
                    next_resync = time.monotonic() + self._resync_s
        finally:
            pubsub.close()

    def _check_notifications(self, client: redis.Redis) -> None:
        try:
            flags = client.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
        except redis.ResponseError:  # CONFIG may be disabled on managed Redis
            return
        if "E" not in flags or not ({"A", "g"} & set(flags) and {"A", "$"} & set(flags) and {"A", "x"} & set(flags)):
            log.warning(
                "redis notify-keyspace-events is %r: changes are seen only at each full resync; "
                "set it to at least 'Eg$x' (e.g. KEA)", flags
            )

    def _scan(self, pattern: str) -> Iterator[list[bytes]]:
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=pattern, count=_SCAN_BATCH):
            batch.append(key)
            if len(batch) >= _SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def load_all(self) -> None:
        """A full load: every key, every model, the published models; then swap them in."""
        started = time.monotonic()
        keys: dict[str, ApiKey] = {}
        for batch in self._scan(KEY_PREFIX + "*"):
            pipe = self._client.pipeline(transaction=False)
            for key in batch:
                pipe.get(key)
                pipe.ttl(key)
            values = pipe.execute()
            for key, raw, ttl in zip(batch, values[::2], values[1::2], strict=True):
                if raw is not None:
                    key_hash = key.decode()[len(KEY_PREFIX):]
                    entry = KeyTable.entry(key_hash, raw, ttl)
                    if entry is not None:
                        keys[key_hash] = entry
        models: dict[str, ModelConfig] = {}
        unavailable: dict[str, str] = {}
        secrets: dict[str, Secret] = {}
        for batch in self._scan(MODEL_PREFIX + "*"):
            for key, raw in zip(batch, self._client.mget(batch), strict=True):
                if raw is not None:
                    self._collect_model(key.decode()[len(MODEL_PREFIX):], raw, models, unavailable, secrets)
                    # NOTE: decryption is CPU work; let requests run between models.
                    yield_to_loop()
        self._decryptor.retain(set(self._seen_ciphertexts))
        self._seen_ciphertexts.clear()
        published = self._client.get(PUBLISHED)
        # Swap: credentials first, so no model is served before its credential is there. Only the models'
        # own go: the store holds the mirrors' too (guardrail profiles' keys).
        for name in self._model_secrets - set(secrets):
            self._store.pop(name, None)
        self._store.update(secrets)
        self._model_secrets = set(secrets)
        self._catalog.replace_dynamic(models, unavailable)
        self._keys.replace_all(keys)
        self._keys.set_published(published)
        self._keys.loaded = True
        for mirror in self._mirrors:
            mirror.load(self._client)
        log.info("loaded %d keys and %d models from redis in %.0f ms", len(keys), len(models),
                 (time.monotonic() - started) * 1000)

    def _collect_model(self, endpoint_id: str, raw: bytes, models: dict, unavailable: dict, secrets: dict) -> None:
        entry = parse_model_entry(endpoint_id, raw, self._registry, self._decryptor)
        if entry is not None and entry.ciphertext:
            self._seen_ciphertexts.add(entry.ciphertext)
        if entry is None:
            return
        if entry.model is None:
            unavailable[endpoint_id] = entry.unavailable
            return
        models[endpoint_id] = entry.model
        if entry.secret is not None:
            secrets[store_name(endpoint_id)] = entry.secret

    def _on_event(self, channel: bytes, key: bytes) -> None:
        event = channel.rsplit(b":", 1)[-1]
        name = key.decode(errors="replace")
        handler: Callable[[str, bool], None] | None = None
        if name.startswith(KEY_PREFIX):
            handler = self._key_changed
        elif name.startswith(MODEL_PREFIX):
            handler = self._model_changed
        elif name == PUBLISHED:
            handler = self._published_changed
        was_set = event in _REREAD_EVENTS
        if handler is not None:
            handler(name, was_set)
        for mirror in self._mirrors:
            if name.startswith(mirror.prefixes):
                mirror.changed(self._client, name, was_set)

    def _on_message(self, channel: str, data: bytes) -> None:
        for mirror in self._mirrors:
            if any(fnmatch.fnmatchcase(channel, pattern) for pattern in mirror.channels):
                mirror.message(channel, data)

    def _reread(self, name: str) -> bytes | None:
        return reread(self._client, name)

    def _key_changed(self, name: str, was_set: bool) -> None:
        key_hash = name[len(KEY_PREFIX):]
        raw = self._reread(name) if was_set else None
        if raw is None:
            self._keys.remove(key_hash)
            return
        self._keys.put(key_hash, raw, self._client.ttl(name))

    def _model_changed(self, name: str, was_set: bool) -> None:
        endpoint_id = name[len(MODEL_PREFIX):]
        raw = self._reread(name) if was_set else None
        entry = parse_model_entry(endpoint_id, raw, self._registry, self._decryptor) if raw is not None else None
        if entry is None:
            self._store.pop(store_name(endpoint_id), None)
            self._catalog.remove(endpoint_id)
        elif entry.model is None:
            self._store.pop(store_name(endpoint_id), None)
            self._catalog.mark_unavailable(endpoint_id, entry.unavailable)
        else:
            if entry.secret is not None:
                self._store[store_name(endpoint_id)] = entry.secret
            else:
                self._store.pop(store_name(endpoint_id), None)
            self._catalog.upsert(entry.model)

    def _published_changed(self, name: str, was_set: bool) -> None:
        self._keys.set_published(self._reread(name) if was_set else None)
