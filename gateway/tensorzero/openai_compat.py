"""TensorZero's extensions of OpenAI's chat request: ``tensorzero::function_name::F`` models and the
``tensorzero::*`` fields, made into the ``/inference`` body they stand for.

Messages become the function's input: system messages its ``system`` (a string, or the object of a
text part's ``tensorzero::arguments``), user and assistant contents its content blocks (``text`` or
``tensorzero::arguments``, ``image_url``, ``tensorzero::raw_text``, ``tensorzero::template``), tool
calls and ``tool`` messages ``tool_call`` and ``tool_result`` blocks. OpenAI's sampling fields go to
``params.chat_completion``, its tools to ``additional_tools``, a ``json_schema`` response format to
``output_schema``. Pure translation, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequestError

__all__ = ["FUNCTION_PREFIX", "consume_extensions", "native_body"]

FUNCTION_PREFIX = "tensorzero::function_name::"
#: ``tensorzero::X`` request fields and the ``/inference`` field each stands for.
_FIELDS = {"episode_id": "episode_id", "variant_name": "variant_name", "tags": "tags", "dryrun": "dryrun",
           "extra_body": "extra_body", "extra_headers": "extra_headers", "cache_options": "cache_options",
           "credentials": "credentials", "include_raw_response": "include_raw_response",
           "include_raw_usage": "include_raw_usage", "namespace": "namespace", "provider_tools": "provider_tools"}
_PARAMS = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_tokens",
           "max_completion_tokens": "max_tokens", "presence_penalty": "presence_penalty",
           "frequency_penalty": "frequency_penalty", "seed": "seed", "stop": "stop_sequences",
           "reasoning_effort": "reasoning_effort", "service_tier": "service_tier", "verbosity": "verbosity"}


def _bad(message: str, param: str = "messages") -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if content is None:
        return []
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or an array of parts")
    out = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and "tensorzero::arguments" in part:
            out.append({"type": "text", "arguments": part["tensorzero::arguments"]})
        elif kind == "text":
            out.append({"type": "text", "text": part.get("text")})
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url")
            if not isinstance(url, str):
                raise _bad(f"{where}: an image_url part needs image_url.url")
            if url.startswith("data:") and ";base64," in url:
                mime, data = url[5:].split(";base64,", 1)
                out.append({"type": "file", "file_type": "base64", "mime_type": mime, "data": data})
            else:
                out.append({"type": "file", "file_type": "url", "url": url})
        elif kind == "tensorzero::raw_text":
            out.append({"type": "raw_text", "value": part.get("value")})
        elif kind == "tensorzero::template":
            out.append({"type": "template", "name": part.get("name"), "arguments": part.get("arguments", {})})
        else:
            raise _bad(f"{where}: unsupported content part type {kind!r}")
    return out


def _input(messages: Any) -> dict[str, Any]:
    if not isinstance(messages, list):
        raise _bad("'messages' must be an array")
    system: Any = None
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            content = message.get("content")
            if isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict) \
                    and "tensorzero::arguments" in content[0]:
                system = content[0]["tensorzero::arguments"]
            elif isinstance(content, list):
                system = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
            else:
                system = content
        elif role in ("user", "assistant"):
            blocks = _blocks(message.get("content"), where)
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                names[call.get("id")] = function.get("name")
                blocks.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                               "arguments": function.get("arguments") or "{}"})
            out.append({"role": role, "content": blocks})
        elif role == "tool":
            call_id = message.get("tool_call_id")
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
            block = {"type": "tool_result", "id": call_id, "name": names.get(call_id, ""), "result": content}
            if out and out[-1]["role"] == "user" and all(b["type"] == "tool_result" for b in out[-1]["content"]):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        else:
            raise _bad(f"{where}: unknown role {role!r}")
    data: dict[str, Any] = {"messages": out}
    if system is not None:
        data["system"] = system
    return data


def native_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/inference`` body a ``tensorzero::function_name::F`` chat request stands for."""
    native: dict[str, Any] = {"function_name": body["model"][len(FUNCTION_PREFIX):], "input": _input(body.get("messages"))}
    for key, value in body.items():
        if key.startswith("tensorzero::"):
            name = key[len("tensorzero::"):]
            if name == "params":
                native["params"] = value
            elif name in _FIELDS:
                native[_FIELDS[name]] = value
            elif name != "deny_unknown_fields":
                raise _bad(f"unknown field {key!r}", key)
    params = {target: body[source] for source, target in _PARAMS.items() if body.get(source) is not None}
    if params:
        existing = native.get("params") if isinstance(native.get("params"), dict) else {}
        native["params"] = {**existing, "chat_completion": {**params, **(existing.get("chat_completion") or {})}}
    if body.get("stream") is True:
        native["stream"] = True
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        native["additional_tools"] = [
            {"name": (t.get("function") or {}).get("name"), "description": (t.get("function") or {}).get("description"),
             "parameters": (t.get("function") or {}).get("parameters"), "strict": (t.get("function") or {}).get("strict")}
            for t in tools if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        native["tool_choice"] = choice
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        native["tool_choice"] = {"specific": choice["function"].get("name")}
    if "parallel_tool_calls" in body:
        native["parallel_tool_calls"] = body["parallel_tool_calls"]
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            native["output_schema"] = schema
    return native


def consume_extensions(body: dict[str, Any]) -> dict[str, Any]:
    """A chat body for a model (not a function) without its ``tensorzero::*`` fields: what they ask
    of the gateway is returned (``tags`` go on the record, ``extra_body`` edits the body)."""
    taken = {key[len("tensorzero::"):]: body.pop(key) for key in [k for k in body if k.startswith("tensorzero::")]}
    return taken
