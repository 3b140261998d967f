"""Hypothesis strategies shared by the fuzz suites: JSON of any shape, and request bodies of nearly the right one."""

from __future__ import annotations

import json

from hypothesis import strategies as st

__all__ = ["json_values", "request_bodies", "texts"]

#: Text of any code point, lone surrogates included (JSON clients produce them from split emoji).
texts = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)
_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
    | st.floats(allow_nan=False, allow_infinity=False) | texts
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)

_KEYS = ["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "input",
         "prompt", "tools", "tool_choice", "temperature", "n", "system", "voice", "file", "stop"]
_MODELS = ["text", "echo", "chain", "embed", "flaky", "missing", "tensorzero::model_name::echo", ""]
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer", "x"]) | json_values},
    optional={"content": json_values | texts, "tool_calls": json_values, "tool_call_id": json_values},
)


def _encode(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


#: JSON request bodies near the shapes the routes take: known models, messages of odd shapes, odd fields.
request_bodies = st.one_of(
    st.fixed_dictionaries(
        {"model": st.sampled_from(_MODELS) | json_values},
        optional={key: json_values for key in _KEYS[1:]}
        | {"messages": st.lists(_message, max_size=3), "stream": st.booleans()},
    ).map(_encode),
    json_values.map(_encode),
    st.binary(max_size=200),
    st.sampled_from([b'{"model": "echo", "messages": [], "temperature": NaN}', b"[1e999]",
                     b'{"model": "echo", "messages": [{"role": "user", "content": "\\ud800"}]}']),
)
