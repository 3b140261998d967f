"""TensorZero's ``[functions]``, ``[tools]`` and ``[metrics]``, as pydantic models of the reference's
tables: every key TensorZero takes is known, any other is refused with its key path.

Only the shape is checked here; ``gateway.tensorzero.functions`` turns the tables into runnable
functions (reading schema and template files, relative to the config file, and compiling them).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveInt, model_validator

from gateway.config.validation import StrictTable

__all__ = ["header_problem", "FunctionTable", "MetricTable", "TENSORZERO_SECTIONS", "ToolTable"]

#: The top-level tables of TensorZero's that ``gateway.tensorzero.config`` reads.
TENSORZERO_SECTIONS = frozenset({"functions", "tools", "metrics", "embedding_models", "provider_types",
                                 "object_storage", "postgres", "clickhouse", "evaluations", "optimizers",
                                 "autopilot"})


_Table = StrictTable


class PathTable(_Table):
    path: str


class Retries(_Table):
    num_retries: NonNegativeInt = 0
    max_delay_s: NonNegativeFloat = 10.0


class _NonStreaming(_Table):
    total_ms: float | None = Field(None, gt=0)


class _Streaming(_Table):
    ttft_ms: float | None = Field(None, gt=0)
    total_ms: float | None = Field(None, gt=0)


class Timeouts(_Table):
    non_streaming: _NonStreaming = _NonStreaming()
    streaming: _Streaming = _Streaming()


class BodyEdit(_Table):
    """One edit of the request body a provider gets: ``value`` at a JSON Pointer, or ``delete``."""

    pointer: str
    value: Any = None
    delete: bool | None = None
    variant_name: str | None = None
    model_name: str | None = None
    provider_name: str | None = None

    @model_validator(mode="after")
    def _one(self) -> BodyEdit:
        if not self.pointer.startswith("/"):
            raise ValueError(f'pointer "{self.pointer}" must start with "/"')
        if ("value" in self.model_fields_set) == (self.delete is True):
            raise ValueError("needs exactly one of value and delete = true")
        return self


class HeaderEdit(_Table):
    name: str
    value: str | None = None
    delete: bool | None = None
    variant_name: str | None = None
    model_name: str | None = None
    provider_name: str | None = None

    @model_validator(mode="after")
    def _one(self) -> HeaderEdit:
        if (self.value is None) == (self.delete is not True):
            raise ValueError("needs a string value or delete = true")
        problem = header_problem(self.name, self.value)
        if problem:
            raise ValueError(problem)
        return self


#: A header name is an RFC 9110 token; the framing and routing headers are the client's own.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection", "upgrade", "te",
                               "trailer", "keep-alive", "proxy-connection"})


def header_problem(name: Any, value: Any) -> str | None:
    """Why a header may not be sent (None: it may): a name that is no token, a framing header, a
    value with a line break or a character HTTP/1.1 cannot carry."""
    if not isinstance(name, str) or not _TOKEN.match(name):
        return f"header name {name!r} is not a token"
    if name.lower() in _RESERVED_HEADERS:
        return f"header {name} is set by the gateway, not by extra_headers"
    if value is None:
        return None
    if not isinstance(value, str):
        return f"header {name}: the value must be a string"
    if any(c in value for c in "\r\n\0") or not value.isascii() and not _latin1(value):
        return f"header {name}: the value holds a line break or a character headers cannot carry"
    return None


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


#: ``extra_body`` / ``extra_headers``: TensorZero's list of edits, or our table of values.
ExtraBody = list[BodyEdit] | dict[str, Any]
ExtraHeaders = list[HeaderEdit] | dict[str, str]


class _Variant(_Table):
    weight: NonNegativeFloat | None = None
    timeouts: Timeouts | None = None


class ChatCompletionVariant(_Variant):
    type: Literal["chat_completion"]
    model: str
    system_template: str | None = None
    user_template: str | None = None
    assistant_template: str | None = None
    templates: dict[str, PathTable] = {}
    input_wrappers: dict[str, PathTable] | None = None
    temperature: float | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: PositiveInt | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop_sequences: list[str] | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    thinking_budget_tokens: PositiveInt | None = None
    verbosity: str | None = None
    json_mode: Literal["off", "on", "strict", "tool"] | None = None
    retries: Retries = Retries()
    extra_body: ExtraBody | None = None
    extra_headers: ExtraHeaders | None = None


class _Candidate(_Table):
    """The evaluator of best-of-n, the fuser of mixture-of-n: a chat_completion without its own type."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)


class BestOfNVariant(_Variant):
    type: Literal["experimental_best_of_n", "experimental_best_of_n_sampling"]
    candidates: list[str] = []
    evaluator: _Candidate


class MixtureOfNVariant(_Variant):
    type: Literal["experimental_mixture_of_n"]
    candidates: list[str] = []
    fuser: _Candidate


class DiclVariant(_Variant):
    type: Literal["experimental_dynamic_in_context_learning"]
    embedding_model: str
    model: str
    k: PositiveInt
    max_distance: NonNegativeFloat | None = None
    system_instructions: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: PositiveInt | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop_sequences: list[str] | None = None
    json_mode: Literal["off", "on", "strict", "tool"] | None = None
    retries: Retries = Retries()
    extra_body: ExtraBody | None = None
    extra_headers: ExtraHeaders | None = None


class ChainOfThoughtVariant(ChatCompletionVariant):
    type: Literal["experimental_chain_of_thought"]  # type: ignore[assignment]


Variant = Annotated[ChatCompletionVariant | BestOfNVariant | MixtureOfNVariant | DiclVariant | ChainOfThoughtVariant,
                    Field(discriminator="type")]
class StaticExperimentation(_Table):
    type: Literal["static", "static_weights", "uniform"] = "static"
    candidate_variants: list[str] | dict[str, NonNegativeFloat] | None = None
    fallback_variants: list[str] = []


class AdaptiveExperimentation(_Table):
    """Accepted (TensorZero's track-and-stop); sampled like ``static`` over its candidates."""

    type: Literal["adaptive", "track_and_stop"]
    candidate_variants: list[str]
    fallback_variants: list[str] = []
    metric: str
    min_samples_per_variant: PositiveInt | None = None
    delta: float | None = None
    epsilon: float | None = None
    update_period_s: PositiveInt | None = None
    min_prob: float | None = None


Experimentation = Annotated[StaticExperimentation | AdaptiveExperimentation, Field(discriminator="type")]


class SpecificTool(_Table):
    specific: str


class FunctionTable(_Table):
    type: Literal["chat", "json"]
    description: str | None = None
    system_schema: str | None = None
    user_schema: str | None = None
    assistant_schema: str | None = None
    schemas: dict[str, PathTable] = {}
    output_schema: str | None = None
    tools: list[str] = []
    tool_choice: Literal["none", "auto", "required"] | SpecificTool = "auto"
    parallel_tool_calls: bool | None = None
    variants: dict[str, Variant] = {}
    experimentation: Experimentation | None = None
    evaluators: dict[str, dict[str, Any]] = {}


class ToolTable(_Table):
    description: str
    parameters: str
    strict: bool = False
    name: str | None = None


class MetricTable(_Table):
    type: Literal["boolean", "float"]
    optimize: Literal["max", "min"]
    level: Literal["inference", "episode"]
    description: str | None = None
