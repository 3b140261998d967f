"""The guard's config tables as pydantic models (``StrictTable``): ``[gateway.blocking]``,
``[gateway.guardrails]`` and a ``[guardrails."ID"]`` profile with its providers, one model per provider
type chosen by its ``type``. ``gateway.config.guard`` reads them and builds the schema's dataclasses.

An optional key defaults to None without its type taking None: a JSON null from budapp is refused
("expected a string, got NoneType"), as the hand-written checks refused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    RootModel,
    Tag,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from gateway.config.validation import StrictTable
from gateway.guard.pii import LocalGuard
from gateway.guard.rules import parse_rule
from providers.credentials import parse_location

__all__ = ["GUARD_PROVIDERS", "GUARD_TYPES", "MODERATION_CATEGORIES", "BlockingTable", "GuardrailsSettings",
           "GuardrailsTable", "ProfileTable"]

GUARD_TYPES = ("input", "output")
#: Provider types a profile may name.
GUARD_PROVIDERS = ("local", "openai", "azure_content_safety")
#: OpenAI's moderation categories (omni-moderation-latest; text-moderation-* use a subset).
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                         "sexual/minors", "violence", "violence/graphic")


def _one_of(*choices: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError("one of " + ", ".join(f'"{choice}"' for choice in choices))
        return value

    return AfterValidator(check)


def _within(low: float, high: float, reason: str) -> AfterValidator:
    """A number from ``low`` to ``high``; ``reason`` (``{}`` is the value) when it is not."""

    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(reason.format(value))
        return value

    return AfterValidator(check)


def _as_written(value: Any, handler: ValidatorFunctionWrapHandler) -> float:
    number = handler(value)
    # NOTE: pydantic makes 5 into 5.0; the value stays as written (options keep it, messages say "got 5").
    return value if isinstance(value, int) else number


def _http(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f'"{value}" is not an http:// or https:// URL')
    return value


def _location(value: str) -> str:
    parse_location(value)  # its ValueError says what is wrong with the location
    return value


#: An integer or a number ("expected an integer or a number, got string").
Number = Annotated[float, WrapValidator(_as_written)]
Url = Annotated[str, AfterValidator(_http)]
Location = Annotated[str, AfterValidator(_location)]
Timeout = Annotated[Number, Field(gt=0)]


# -- [gateway.blocking], [gateway.guardrails] ----------------------------------------------------------


def _endpoint_id(value: Any) -> Any:
    if value is not None and not isinstance(value, str):
        raise ValueError("expected a string")
    return value


class RuleTable(StrictTable):
    """A rule in budapp's fields; ``parse_rule`` (the parser of the Redis rules) checks their values."""

    id: Any = None
    rule_type: Any = None
    name: Any = None
    priority: Any = None
    status: Any = None
    expires_at: Any = None
    action: Any = None
    config: Any = None
    endpoint_id: Annotated[Any, AfterValidator(_endpoint_id)] = None

    @model_validator(mode="before")
    @classmethod
    def _parses(cls, data: Any) -> Any:
        # NOTE: before the keys are checked: a rule that does not parse is told by that reason alone.
        if isinstance(data, dict):
            parse_rule(data, "gateway.blocking.rules")
        return data


class BlockingTable(StrictTable):
    rules: list[RuleTable] = []
    enabled: bool = False


class GuardrailsSettings(StrictTable):
    """``[gateway.guardrails]``: None is the environment's window (``guard.stream_window_chars``)."""

    stream_window_chars: Annotated[int, Field(gt=0)] = None


# -- [guardrails."ID"] ----------------------------------------------------------------------------------


class LocalProvider(StrictTable):
    type: Literal["local"]
    action: Annotated[str, _one_of("block", "redact")] = "block"
    pii: list[str] = []
    patterns: dict[str, str] = {}
    deny_words: list[str] = []

    @model_validator(mode="after")
    def _finds_something(self) -> LocalProvider:
        if not self.pii and not self.patterns and not self.deny_words:
            raise ValueError("finds nothing: set pii, patterns or deny_words")
        LocalGuard(self.pii, self.patterns, self.deny_words)  # its ValueError names the bad detector or pattern
        return self

    def options(self) -> Mapping[str, Any]:
        return MappingProxyType({"pii": tuple(self.pii), "action": self.action,
                                 "patterns": MappingProxyType(dict(self.patterns)),
                                 "deny_words": tuple(self.deny_words)})


def _categories(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError("expected an array of category names")
    unknown = [x for x in value if x not in MODERATION_CATEGORIES]
    if unknown:
        raise ValueError(f'unknown moderation category "{unknown[0]}" (one of: {", ".join(MODERATION_CATEGORIES)})')
    return tuple(value)


class OpenAIProvider(StrictTable):
    type: Literal["openai"]
    api_base: Url = None
    api_key_location: Location = None
    #: Each moderation model, and the categories acted on.
    probe_config: dict[str, Annotated[tuple[str, ...], PlainValidator(_categories)]] = {}
    severity_threshold: Annotated[Number, _within(0, 1, "must be between 0 and 1, got {}")] = None
    timeout_ms: Timeout = 2000

    def options(self) -> Mapping[str, Any]:
        return MappingProxyType({"api_base": self.api_base, "api_key_location": self.api_key_location,
                                 "probe_config": dict(self.probe_config) or None,
                                 "severity_threshold": self.severity_threshold, "timeout_ms": self.timeout_ms})


def _endpoint_given(value: Any) -> Any:
    if value is None:
        raise ValueError("missing (the Content Safety resource's endpoint)")
    return value


class AzureContentSafetyProvider(StrictTable):
    type: Literal["azure_content_safety"]
    endpoint: Annotated[Url, BeforeValidator(_endpoint_given)] = Field(None, validate_default=True)
    api_key_location: Location = None
    categories: list[str] = []
    severity_threshold: Annotated[int, _within(0, 7, "a severity from 0 to 7, got {}")] = None
    timeout_ms: Timeout = 2000
    api_version: str = None

    def options(self) -> Mapping[str, Any]:
        return MappingProxyType({"endpoint": self.endpoint, "api_key_location": self.api_key_location,
                                 "categories": tuple(self.categories) or None,
                                 "severity_threshold": self.severity_threshold, "timeout_ms": self.timeout_ms,
                                 "api_version": self.api_version})


def _unknown_type(value: Any) -> Any:
    raise ValueError(f"one of: {', '.join(GUARD_PROVIDERS)}")


class UnknownProvider(StrictTable):
    """A provider table of no known ``type`` (or not a table): it says so at ``.type``, nothing more."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    type: Annotated[Any, AfterValidator(_unknown_type)] = Field(None, validate_default=True)


#: Each provider type's member of the union. NOTE: capitalised, as pydantic names union members:
#: ``read_table`` leaves those out of the key path (a tag like "local" could be taken for a key).
_TAGS = {"local": "Local", "openai": "OpenAI", "azure_content_safety": "AzureContentSafety"}


def _provider_tag(data: Any) -> str:
    kind = data.get("type") if isinstance(data, dict) else None
    return _TAGS.get(kind, "Unknown") if isinstance(kind, str) else "Unknown"


Provider = Annotated[Annotated[LocalProvider, Tag("Local")] | Annotated[OpenAIProvider, Tag("OpenAI")]
                     | Annotated[AzureContentSafetyProvider, Tag("AzureContentSafety")]
                     | Annotated[UnknownProvider, Tag("Unknown")], Discriminator(_provider_tag)]


class ProfileTable(StrictTable):
    """A ``[guardrails."ID"]`` table, or budapp's entry (its ``api_key`` taken out by the store)."""

    #: budapp's label of the profile; not read.
    name: Any = None
    guard_types: list[Annotated[str, _one_of(*GUARD_TYPES)]] = list(GUARD_TYPES)
    execution_mode: Annotated[str, _one_of("parallel", "sequential")] = "parallel"
    failure_mode: Annotated[str, _one_of("best_effort", "fail_fast")] = "best_effort"
    providers: dict[str, Provider] = {}
    severity_threshold: Annotated[Number, _within(0, 1, "must be between 0 and 1 (a moderation score), got {}")] = None

    @field_validator("providers")
    @classmethod
    def _names_one(cls, value: dict[str, Provider]) -> dict[str, Provider]:
        if not value:
            raise ValueError("names no provider")
        return value


class GuardrailsTable(RootModel[dict[str, Any]]):
    """``[guardrails]``: a table of profiles, each read on its own."""

    model_config = ConfigDict(frozen=True, strict=True)
