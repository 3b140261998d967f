"""The remote guardrail providers, through the gateway's upstream client: ``openai`` (OpenAI's
``/v1/moderations``) and ``azure_content_safety`` (Azure AI Content Safety's ``text:analyze``).

``openai``: ``probe_config`` maps each moderation model to the categories acted on (an empty list:
any category the model flags); a text is flagged when one of those categories scores at least the
``severity_threshold`` (the provider's, else the profile's, else 0.5). ``azure_content_safety``: each
text is analysed for ``categories`` (default Hate, SelfHarm, Sexual, Violence) and flagged when one
reaches ``severity_threshold`` on Azure's 0-7 scale (default 2). Each call has ``timeout_ms``
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

__all__ = ["AzureContentSafety", "GuardrailUnavailable", "OpenAIModeration", "RemoteGuard"]

ATTEMPTS = 3
_BACKOFF_S = 0.05
DEFAULT_BASE = "https://api.openai.com/v1"
DEFAULT_KEY = "env::OPENAI_API_KEY"


class GuardrailUnavailable(Exception):
    """A guardrail provider could not give a verdict (a timeout, an error, an answer it cannot read)."""


class RemoteGuard:
    """What every remote provider shares: its credential, and a JSON POST with a timeout and retries."""

    #: The provider type's default key location.
    default_key = DEFAULT_KEY

    def __init__(self, name: str, options: Mapping[str, Any], http: UpstreamClient,
                 store: Mapping[str, Secret] | None = None) -> None:
        self.name = name
        self._http = http
        self._credential = Credential(str(options.get("api_key_location") or self.default_key), store)
        self._timeout_s = float(options.get("timeout_ms") or 2000) / 1000.0

    def flagged(self, texts: list[str]) -> list[tuple[str, float]]:
        raise NotImplementedError

    def _auth(self, secret: Secret) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret.reveal()}"}

    def _post(self, url: str, payload: dict) -> Any:
        """The answer's JSON; ``GuardrailUnavailable`` when no attempt gave one."""
        try:
            secret = self._credential.get()
        except CredentialError as e:
            raise GuardrailUnavailable(str(e)) from None
        headers = {"Content-Type": "application/json", **(self._auth(secret) if secret is not None else {})}
        body = ujson.dumps(payload).encode()
        problem = "no attempt"
        for attempt_no in range(ATTEMPTS):
            if attempt_no:
                gevent.sleep(_BACKOFF_S * 2 ** (attempt_no - 1))
            attempt = Attempt(f"guardrail/{self.name}", self.name, time.monotonic(), time.time(), "guardrail")
            try:
                with gevent.Timeout(self._timeout_s, TimeoutError("guardrail call timed out")):
                    status, raw = self._http.post(url, body, headers, attempt)
            except Exception as e:  # the upstream client's errors, a timeout
                problem = type(e).__name__
                continue
            if status != 200:
                problem = f"HTTP {status}"
                if 400 <= status < 500 and status != 429:
                    break  # a request the provider refuses will not pass on the next try
                continue
            try:
                return ujson.loads(raw)
            except ValueError:
                raise GuardrailUnavailable("an answer that is not JSON") from None
        raise GuardrailUnavailable(f"failed after {ATTEMPTS} attempts ({problem})")


class OpenAIModeration(RemoteGuard):
    def __init__(self, name: str, options: Mapping[str, Any], http: UpstreamClient, threshold: float | None,
                 store: Mapping[str, Secret] | None = None) -> None:
        super().__init__(name, options, http, store)
        self._url = str(options.get("api_base") or DEFAULT_BASE).rstrip("/") + "/moderations"
        probes = options.get("probe_config") or {"omni-moderation-latest": []}
        self._probes = {model: frozenset(categories) for model, categories in probes.items()}
        value = options.get("severity_threshold")
        self._threshold = float(value if value is not None else threshold if threshold is not None else 0.5)

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
        answer = self._post(self._url, {"model": model, "input": texts})
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise GuardrailUnavailable("a moderation answer without results")
        return results


#: Azure AI Content Safety's text categories, and its severity scale's top.
AZURE_CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")
AZURE_API_VERSION = "2023-10-01"


class AzureContentSafety(RemoteGuard):
    default_key = "env::AZURE_CONTENT_SAFETY_KEY"

    def __init__(self, name: str, options: Mapping[str, Any], http: UpstreamClient,
                 store: Mapping[str, Secret] | None = None) -> None:
        super().__init__(name, options, http, store)
        version = options.get("api_version") or AZURE_API_VERSION
        self._url = f"{str(options['endpoint']).rstrip('/')}/contentsafety/text:analyze?api-version={version}"
        self._categories = list(options.get("categories") or AZURE_CATEGORIES)
        value = options.get("severity_threshold")
        self._threshold = int(value) if value is not None else 2

    def _auth(self, secret: Secret) -> dict[str, str]:
        return {"Ocp-Apim-Subscription-Key": secret.reveal()}

    def flagged(self, texts: list[str]) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = []
        for text in texts:
            answer = self._post(self._url, {"text": text, "categories": self._categories,
                                            "outputType": "FourSeverityLevels"})
            analysis = answer.get("categoriesAnalysis") if isinstance(answer, dict) else None
            if not isinstance(analysis, list):
                raise GuardrailUnavailable("a content safety answer without categoriesAnalysis")
            for item in analysis:
                severity = item.get("severity") if isinstance(item, dict) else None
                if isinstance(severity, int) and severity >= self._threshold:
                    found.append((f"content_safety:{item.get('category')}", severity / 7))
        return found
