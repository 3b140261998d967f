"""A ``POST /inference`` request made into the OpenAI chat body one variant sends.

The input's ``system`` and ``messages`` (content blocks ``text``, ``raw_text``, ``template``,
``tool_call``, ``tool_result``, ``file``/``image``, ``thought``, ``unknown``) are checked against the
function's schemas and rendered with the variant's templates; the function's tools (with the
request's ``additional_tools``, narrowed by ``allowed_tools``), ``tool_choice``,
``parallel_tool_calls``, the JSON mode of a json function, the variant's parameters and the
request's ``params.chat_completion`` become the fields of the body. Pure translation, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequestError
from gateway.tensorzero.functions import Function, Tool, Variant
from gateway.tensorzero.templates import ArgumentsError, Schema, TemplateError, Templates
from providers.jsonpointer import PointerError, apply_edits

__all__ = ["JSON_TOOL", "ToolSet", "chat_body", "chat_params", "scoped_edits", "tool_params", "tool_set"]

#: The tool a json function's ``json_mode = "tool"`` makes the model call with its answer.
JSON_TOOL = "respond"
#: The variant parameters sent as they are, and the one renamed.
_PARAMS = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "seed",
           "reasoning_effort", "service_tier", "verbosity")


def _bad(message: str, param: str = "input") -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


class ToolSet:
    """The tools one inference may call, by the name the model sees."""

    __slots__ = ("tools", "choice", "parallel")

    def __init__(self, tools: dict[str, Tool], choice: Any, parallel: bool | None) -> None:
        self.tools = tools
        self.choice = choice
        self.parallel = parallel


def tool_set(function: Function, body: Mapping[str, Any]) -> ToolSet:
    """The function's tools with the request's ``additional_tools``, narrowed by ``allowed_tools``."""
    tools = {tool.name: tool for tool in function.tools}
    by_key = {tool.key: tool for tool in function.tools}
    extra = body.get("additional_tools")
    if extra is not None:
        if not isinstance(extra, list):
            raise _bad("'additional_tools' must be an array", "additional_tools")
        for i, item in enumerate(extra):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise _bad(f"additional_tools[{i}] needs a 'name'", "additional_tools")
            try:
                tool = Tool(item["name"], item["name"], str(item.get("description") or ""),
                            item.get("parameters") or {"type": "object"}, bool(item.get("strict")))
            except ValueError as e:
                raise _bad(f"additional_tools[{i}].parameters: {e}", "additional_tools") from None
            tools[tool.name] = by_key[tool.key] = tool
    allowed = body.get("allowed_tools")
    if allowed is not None:
        if not isinstance(allowed, list) or not all(isinstance(x, str) for x in allowed):
            raise _bad("'allowed_tools' must be an array of tool names", "allowed_tools")
        unknown = [x for x in allowed if x not in by_key]
        if unknown:
            raise _bad(f"allowed_tools: tool {unknown[0]!r} is not defined", "allowed_tools")
        tools = {by_key[x].name: by_key[x] for x in allowed}
    choice = body.get("tool_choice") or function.tool_choice
    if isinstance(choice, dict):
        specific = choice.get("specific")
        tool = by_key.get(specific) or tools.get(specific)
        if tool is None:
            raise _bad(f"tool_choice: tool {specific!r} is not defined", "tool_choice")
        choice = {"specific": tool.name}
    elif choice not in ("none", "auto", "required"):
        raise _bad("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"specific\": NAME}", "tool_choice")
    parallel = body.get("parallel_tool_calls")
    parallel = function.parallel_tool_calls if parallel is None else parallel
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("'parallel_tool_calls' must be a boolean", "parallel_tool_calls")
    return ToolSet(tools, choice, parallel)


def _render(templates: Templates, variant: Variant, name: str, schema: Schema | None, arguments: Any) -> str:
    if schema is not None:
        try:
            schema.check(arguments)
        except ArgumentsError as e:
            raise _bad(f"the arguments of {name!r} do not match its schema: {e}") from None
    template = variant.templates.get(name)
    if template is None:
        raise _bad(f"variant {variant.name!r} has no template {name!r}")
    if not isinstance(arguments, dict):
        raise _bad(f"the arguments of {name!r} must be an object")
    try:
        return templates.render(template, arguments)
    except TemplateError as e:
        raise _bad(f"template {name!r} failed to render: {e}") from None


def _system(function: Function, variant: Variant, system: Any, templates: Templates) -> str | None:
    schema = function.schemas.get("system")
    if system is None:
        if schema is None and "system" in variant.templates:
            return _render(templates, variant, "system", None, {})  # a fixed system prompt
        if schema is not None:
            raise _bad("input.system is required: the function has a system schema")
        return None
    if isinstance(system, str):
        if schema is not None:
            raise _bad("input.system must be an object: the function has a system schema")
        return system
    if isinstance(system, dict):
        return _render(templates, variant, "system", schema, system)
    raise _bad("input.system must be a string or an object")


def _file_part(block: dict) -> dict[str, Any]:
    """A ``file`` (or legacy ``image``) block as an OpenAI content part."""
    kind = block.get("file_type") or ("url" if "url" in block else "base64")
    if kind == "url":
        url = block.get("url")
        if not isinstance(url, str):
            raise _bad("a file block of file_type \"url\" needs a 'url'")
        if (block.get("mime_type") or "image/").startswith("image/"):
            image: dict[str, Any] = {"url": url}
            if block.get("detail") is not None:
                image["detail"] = block["detail"]
            return {"type": "image_url", "image_url": image}
        return {"type": "file", "file": {"file_url": url, **({"filename": block["filename"]} if "filename" in block
                                                              else {})}}
    data, mime = block.get("data"), block.get("mime_type")
    if not isinstance(data, str):
        raise _bad("a file block of file_type \"base64\" needs 'data'")
    mime = mime if isinstance(mime, str) else "application/octet-stream"
    url = f"data:{mime};base64,{data}"
    if mime.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": url, **({"detail": block["detail"]} if "detail" in block
                                                                 else {})}}
    return {"type": "file", "file": {"file_data": url, "filename": block.get("filename") or "file"}}


def _messages(function: Function, variant: Variant, messages: Any, templates: Templates) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise _bad("input.messages must be an array")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _bad(f"input.messages[{i}] needs a role of \"user\" or \"assistant\"")
        role = message["role"]
        schema = function.schemas.get(role)
        content = message.get("content")
        if isinstance(content, str):
            if schema is not None:
                raise _bad(f"input.messages[{i}].content must be content blocks: the function has a {role} schema")
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise _bad(f"input.messages[{i}].content must be a string or an array of content blocks")
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for j, block in enumerate(content):
            where = f"input.messages[{i}].content[{j}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                arguments = block.get("arguments", block.get("text") if not isinstance(block.get("text"), str) else None)
                if arguments is not None:
                    parts.append({"type": "text", "text": _render(templates, variant, role, schema, arguments)})
                elif isinstance(block.get("text"), str):
                    if schema is not None:
                        raise _bad(f"{where}: the function has a {role} schema: send 'arguments'")
                    parts.append({"type": "text", "text": block["text"]})
                else:
                    raise _bad(f"{where}: a text block needs 'text' or 'arguments'")
            elif kind in ("template", "tensorzero::template"):
                name = block.get("name")
                if not isinstance(name, str):
                    raise _bad(f"{where}: a template block needs a 'name'")
                text = _render(templates, variant, name, function.schemas.get(name), block.get("arguments", {}))
                parts.append({"type": "text", "text": text})
            elif kind in ("raw_text", "tensorzero::raw_text"):
                if not isinstance(block.get("value"), str):
                    raise _bad(f"{where}: a raw_text block needs a string 'value'")
                parts.append({"type": "text", "text": block["value"]})
            elif kind == "tool_call":
                arguments = block.get("arguments", block.get("raw_arguments"))
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments if arguments is not None else {})
                name = block.get("name", block.get("raw_name"))
                if not isinstance(name, str) or not isinstance(block.get("id"), str):
                    raise _bad(f"{where}: a tool_call block needs 'id' and 'name'")
                calls.append({"id": block["id"], "type": "function", "function": {"name": name, "arguments": arguments}})
            elif kind == "tool_result":
                if not isinstance(block.get("id"), str):
                    raise _bad(f"{where}: a tool_result block needs an 'id'")
                result = block.get("result")
                results.append({"role": "tool", "tool_call_id": block["id"],
                                "content": result if isinstance(result, str) else json.dumps(result)})
            elif kind in ("file", "image"):
                parts.append(_file_part(block))
            elif kind == "thought":
                continue  # a provider's own reasoning: not sent back through an OpenAI-format body
            elif kind == "unknown":
                if isinstance(block.get("data"), dict):
                    parts.append(block["data"])
            else:
                raise _bad(f"{where}: unknown content block type {kind!r}")
        out.extend(results)
        if parts or calls:
            if role == "assistant":
                text = "".join(p["text"] for p in parts if p.get("type") == "text")
                entry: dict[str, Any] = {"role": "assistant", "content": text or None}
                if calls:
                    entry["tool_calls"] = calls
                out.append(entry)
            elif all(p.get("type") == "text" for p in parts) and len(parts) == 1:
                out.append({"role": "user", "content": parts[0]["text"]})
            else:
                out.append({"role": "user", "content": parts})
    return out


def chat_body(function: Function, variant: Variant, body: Mapping[str, Any], tools: ToolSet, templates: Templates,
              output_schema: Schema | None) -> dict[str, Any]:
    """The OpenAI chat body ``variant`` sends for the request ``body``."""
    table = variant.table
    data = body.get("input") or {}
    if not isinstance(data, dict):
        raise _bad("'input' must be an object")
    messages = _messages(function, variant, data.get("messages") or [], templates)
    system = _system(function, variant, data.get("system"), templates)
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    out: dict[str, Any] = {"messages": messages}
    params = {name: getattr(table, name, None) for name in _PARAMS}
    params["stop"] = getattr(table, "stop_sequences", None)
    json_mode = getattr(table, "json_mode", None)
    overrides = (body.get("params") or {}).get("chat_completion") if isinstance(body.get("params"), dict) else None
    if isinstance(overrides, dict):
        for name, value in overrides.items():
            if name == "stop_sequences":
                params["stop"] = value
            elif name == "json_mode":
                json_mode = value
            elif name in _PARAMS:
                params[name] = value
    out.update((k, v) for k, v in params.items() if v is not None)
    if function.type == "json":
        _json_mode(out, json_mode or "strict", output_schema)
    elif tools.tools and tools.choice != "none":
        out["tools"] = [tool.openai() for tool in tools.tools.values()]
        choice = tools.choice
        out["tool_choice"] = {"type": "function", "function": {"name": choice["specific"]}} \
            if isinstance(choice, dict) else choice
        if tools.parallel is not None:
            out["parallel_tool_calls"] = tools.parallel
    edits = _edits(getattr(table, "extra_body", None))
    if edits:
        try:
            apply_edits(out, edits)
        except PointerError as e:
            raise _bad(f"extra_body: {e}", "extra_body") from None
    return out


def _json_mode(out: dict[str, Any], mode: str, schema: Schema | None) -> None:
    if mode == "on":
        out["response_format"] = {"type": "json_object"}
    elif mode == "strict" and schema is not None:
        out["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "response", "strict": True, "schema": schema.document}}
    elif mode == "strict":
        out["response_format"] = {"type": "json_object"}
    elif mode == "tool":
        parameters = schema.document if schema is not None else {"type": "object"}
        out["tools"] = [{"type": "function", "function": {
            "name": JSON_TOOL, "description": "Respond with the answer as the arguments of this call.",
            "parameters": parameters}}]
        out["tool_choice"] = {"type": "function", "function": {"name": JSON_TOOL}}
    elif mode != "off":
        raise _bad(f"params.chat_completion.json_mode: unknown mode {mode!r}", "params")


def _edits(config: Any) -> list[dict[str, Any]]:
    """A variant's ``extra_body``: TensorZero's list of edits, or our table of top-level values."""
    if config is None:
        return []
    if isinstance(config, dict):
        return [{"pointer": "/" + key.replace("~", "~0").replace("/", "~1"), "value": value}
                for key, value in config.items()]  # apply_edits copies each value in
    return [edit.model_dump(exclude_none=True) for edit in config]


def scoped_edits(edits: Any, param: str, model: str | None, variant: str | None = None) -> tuple[dict[str, Any], ...]:
    """A request's ``extra_body`` edits (field ``param``) that apply to ``model`` (and ``variant``):
    the provider applies them last, so they win over the config's."""
    if edits is None:
        return ()
    if not isinstance(edits, list) or not all(isinstance(e, dict) and isinstance(e.get("pointer"), str)
                                              for e in edits):
        raise _bad(f"'{param}' must be an array of {{pointer, value | delete}}", param)
    return tuple(e for e in edits if e.get("variant_name") in (None, variant) and e.get("model_name") in (None, model))


def chat_params(chat: dict) -> dict:
    """The inference parameters a chat body carries (for the inference's ``inference_params``)."""
    return {k: v for k, v in chat.items() if k not in ("messages", "tools", "tool_choice", "stream", "stream_options")}


def tool_params(tools: ToolSet) -> dict:
    """What tools an inference offered (for its ``tool_params``)."""
    return {"tools_available": [t.openai()["function"] for t in tools.tools.values()], "tool_choice": tools.choice,
            "parallel_tool_calls": tools.parallel}
