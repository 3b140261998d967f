"""The ``openai`` guardrail provider: OpenAI's ``/v1/moderations``, through the gateway's upstream client.

``probe_config`` maps each moderation model to the categories acted on (an empty list: any category
the model flags); a text is flagged when one of those categories scores at least the
``severity_threshold`` (the provider's, else the profile's, else 0.5). Each call has ``timeout_ms``
(default 2000) and up to three attempts with backoff; a call that still fails raises
``GuardrailUnavailable``, which the profile's ``failure_mode`` decides on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import gevent
import ujson

from providers.base import Attempt
from providers.credentials import Credential, CredentialError, Secret
from providers.http import UpstreamClient

__all__ = ["GuardrailUnavailable", "OpenAIModeration"]

ATTEMPTS = 3
_BACKOFF_S = 0.05
DEFAULT_BASE = "https://api.openai.com/v1"
DEFAULT_KEY = "env::OPENAI_API_KEY"


class GuardrailUnavailable(Exception):
    """A guardrail provider could not give a verdict (a timeout, an error, an answer it cannot read)."""


class OpenAIModeration:
    action = "block"

    def __init__(self, name: str, options: Mapping[str, Any], http: UpstreamClient, threshold: float | None,
                 store: Mapping[str, Secret] | None = None) -> None:
        self.name = name
        self._http = http
        self._url = str(options.get("api_base") or DEFAULT_BASE).rstrip("/") + "/moderations"
        self._credential = Credential(str(options.get("api_key_location") or DEFAULT_KEY), store)
        probes = options.get("probe_config") or {"omni-moderation-latest": []}
        self._probes = {model: frozenset(categories) for model, categories in probes.items()}
        value = options.get("severity_threshold")
        self._threshold = float(value if value is not None else threshold if threshold is not None else 0.5)
        self._timeout_s = float(options.get("timeout_ms") or 2000) / 1000.0

    def flagged(self, texts: list[str]) -> list[tuple[str, float]]:
        """``(moderation:CATEGORY, score)`` for each category flagged by a probe model (empty: none)."""
        found: list[tuple[str, float]] = []
        for model, categories in self._probes.items():
            for result in self._call(model, texts):
                scores = result.get("category_scores") if isinstance(result, dict) else None
                if not isinstance(scores, dict):
                    raise GuardrailUnavailable("a moderation result without category_scores")
                for category, score in scores.items():
                    if (not categories or category in categories) and isinstance(score, (int, float)) \
                            and score >= self._threshold:
                        found.append((f"moderation:{category}", float(score)))
        return found

    def _call(self, model: str, texts: list[str]) -> list:
        try:
            secret = self._credential.get()
        except CredentialError as e:
            raise GuardrailUnavailable(str(e)) from None
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret.reveal()}"
        body = ujson.dumps({"model": model, "input": texts}).encode()
        problem = "no attempt"
        for attempt_no in range(ATTEMPTS):
            if attempt_no:
                gevent.sleep(_BACKOFF_S * 2 ** (attempt_no - 1))
            attempt = Attempt(f"guardrail/{self.name}", self.name, time.monotonic(), time.time(), "openai")
            try:
                with gevent.Timeout(self._timeout_s, TimeoutError("moderation timed out")):
                    status, raw = self._http.post(self._url, body, headers, attempt)
            except Exception as e:  # the upstream client's errors, a timeout
                problem = type(e).__name__
                continue
            if status != 200:
                problem = f"HTTP {status}"
                if 400 <= status < 500 and status != 429:
                    break  # a request the provider refuses will not pass on the next try
                continue
            try:
                results = ujson.loads(raw).get("results")
            except (ValueError, AttributeError):
                results = None
            if not isinstance(results, list):
                raise GuardrailUnavailable("a moderation answer without results")
            return results
        raise GuardrailUnavailable(f"moderation failed after {ATTEMPTS} attempts ({problem})")
