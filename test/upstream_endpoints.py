"""OpenAI's endpoints other than chat completions, and the canned answers they (and chat) give.

``EndpointsHandler`` answers text completions, embeddings, moderations, audio transcriptions, translations
and speech, image generations, edits and variations, and the Responses API as OpenAI does, from the
request; ``upstream.OpenAIHandler`` routes to its methods and adds chat completions and the scripted faults.
``gated`` (speech, Responses stream) sends the first piece, then waits for ``Upstream.release()``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import time
import wave
from collections.abc import Iterator

from media import png_bytes
from upstream_wire import Form, Handler, openai_error

__all__ = [
    "CONTENT",
    "EMBEDDING_DIMENSIONS",
    "FLAGGED_WORD",
    "TRANSCRIPT",
    "TRANSLATION",
    "USAGE",
    "EndpointsHandler",
    "embedding_vector",
    "responses_events",
    "responses_object",
    "speech_bytes",
]

#: The text every generating endpoint answers: chat and text completions, the Responses API.
CONTENT = "upstream says hi"
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
TRANSCRIPT = "upstream heard a tone"
TRANSLATION = "upstream translated a tone"
#: Each embedding's length unless the request asks for ``dimensions``.
EMBEDDING_DIMENSIONS = 4
#: A moderation input containing this word is flagged for violence.
FLAGGED_WORD = "forbidden"
#: How many pieces the speech audio is streamed in.
_SPEECH_PIECES = 4

_AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg", "aac": "audio/aac",
                "flac": "audio/flac", "pcm": "audio/pcm"}
_MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                          "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent",
                          "sexual", "sexual/minors", "violence", "violence/graphic")


def embedding_vector(index: int, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The embedding of the ``index``-th input: values float32 holds exactly, so base64 round-trips."""
    return [(-1.0) ** k * (index + 1 + k * 0.25) for k in range(dimensions)]


def speech_bytes(text: str, response_format: str = "mp3") -> bytes:
    """The audio ``/audio/speech`` answers for ``text``: 6 KiB of bytes derived from it, behind an ID3 tag."""
    digest = hashlib.sha256(text.encode()).digest()
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + response_format.encode() + digest * 192


class EndpointsHandler(Handler):
    """The OpenAI endpoints other than chat; each method gets the parsed JSON body or form."""

    # -- text completions, embeddings, moderations -------------------------------------------------------

    def _text_completion(self, body: dict) -> None:
        model = body["model"]
        if body.get("stream") is not True:
            choice = {"text": CONTENT, "index": 0, "logprobs": None, "finish_reason": "stop"}
            self.send_json(200, _text_object(model, [choice], usage=dict(USAGE)))
            return
        self.start_chunked()
        for i, word in enumerate(CONTENT.split(" ")):
            text = word if i == 0 else " " + word
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": None}
            self.send_event(json.dumps(_text_object(model, [choice])).encode())
        done = {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}
        self.send_event(json.dumps(_text_object(model, [done])).encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            self.send_event(json.dumps(_text_object(model, [], usage=dict(USAGE))).encode())
        self.send_event(b"[DONE]")
        self.end_chunked()

    def _embeddings(self, body: dict) -> None:
        inputs = body.get("input")
        if isinstance(inputs, str) or isinstance(inputs, list) and inputs and isinstance(inputs[0], int):
            count = 1
        elif isinstance(inputs, list) and inputs:
            count = len(inputs)
        else:
            self.send_json(400, openai_error(400, "'input' must be a non-empty string or array"))
            return
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
        data = []
        for i in range(count):
            vector: list[float] | str = embedding_vector(i, dimensions)
            if body.get("encoding_format") == "base64":
                # Little-endian float32, as OpenAI packs them.
                vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        usage = {"prompt_tokens": 2 * count, "total_tokens": 2 * count}
        self.send_json(200, {"object": "list", "data": data, "model": body["model"], "usage": usage})

    def _moderations(self, body: dict) -> None:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        results = []
        for text in texts:
            flagged = FLAGGED_WORD in str(text)
            results.append({
                "flagged": flagged,
                "categories": {c: flagged and c == "violence" for c in _MODERATION_CATEGORIES},
                "category_scores": {c: 0.97 if flagged and c == "violence" else 0.001
                                    for c in _MODERATION_CATEGORIES},
                "category_applied_input_types": {c: ["text"] for c in _MODERATION_CATEGORIES},
            })
        self.send_json(200, {"id": "modr-upstream-1", "model": body["model"], "results": results})

    # -- audio -----------------------------------------------------------------------------------------

    def _transcription(self, form: Form) -> None:
        self._audio(form, "transcribe", TRANSCRIPT)

    def _translation(self, form: Form) -> None:
        self._audio(form, "translate", TRANSLATION)

    def _audio(self, form: Form, task: str, text: str) -> None:
        files = form.files_named("file")
        if not files:
            self.send_json(400, openai_error(400, "upstream got no 'file' part", param="file"))
            return
        try:
            with wave.open(io.BytesIO(files[0].data)) as w:
                duration = w.getnframes() / w.getframerate()
        except (wave.Error, EOFError):
            message = "Invalid file format: upstream wants a WAV file"
            self.send_json(400, openai_error(400, message, param="file"))
            return
        fmt = form.get("response_format") or "json"
        if fmt == "json":
            usage = {"type": "duration", "seconds": max(1, round(duration))}
            self.send_json(200, {"text": text, "usage": usage})
        elif fmt == "verbose_json":
            segment = {"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text, "tokens": [1, 2, 3],
                       "temperature": float(form.get("temperature") or 0), "avg_logprob": -0.2,
                       "compression_ratio": 1.0, "no_speech_prob": 0.01}
            verbose = {"task": task, "language": form.get("language") or "english", "duration": duration,
                       "text": text, "segments": [segment]}
            if "word" in form.getall("timestamp_granularities[]"):
                step = duration / len(text.split())
                verbose["words"] = [{"word": w, "start": i * step, "end": (i + 1) * step}
                                    for i, w in enumerate(text.split())]
            self.send_json(200, verbose)
        elif fmt in ("text", "srt", "vtt"):
            self.send_bytes(200, _subtitles(fmt, text, duration).encode(), "text/plain; charset=utf-8")
        else:
            message = f"unsupported response_format {fmt!r}"
            self.send_json(400, openai_error(400, message, param="response_format"))

    def _speech(self, body: dict) -> None:
        fmt = body.get("response_format") or "mp3"
        if not body.get("input") or not body.get("voice") or fmt not in _AUDIO_TYPES:
            self.send_json(400, openai_error(400, "speech needs input, voice and a known response_format"))
            return
        audio = speech_bytes(body["input"], fmt)
        self.start_chunked(_AUDIO_TYPES[fmt])
        size = -(-len(audio) // _SPEECH_PIECES)
        for i in range(0, len(audio), size):
            self.send_chunk(audio[i:i + size])
            if i == 0 and body["model"] == "gated":
                self.wait_gate()
        self.end_chunked()

    # -- images ----------------------------------------------------------------------------------------

    def _image_generation(self, body: dict) -> None:
        n = body.get("n") or 1
        if body.get("response_format") == "b64_json":
            image = base64.b64encode(png_bytes()).decode()
            data = [{"b64_json": image, "revised_prompt": body.get("prompt")}] * n
        else:
            data = [{"url": f"https://images.upstream.test/{i}.png", "revised_prompt": body.get("prompt")}
                    for i in range(n)]
        self.send_json(200, {"created": int(time.time()), "data": data})

    def _image_edit(self, form: Form) -> None:
        if form.get("prompt") is None:
            self.send_json(400, openai_error(400, "upstream got no 'prompt'", param="prompt"))
            return
        self._images_back(form)

    def _image_variation(self, form: Form) -> None:
        self._images_back(form)

    def _images_back(self, form: Form) -> None:
        """Each uploaded image back as ``b64_json`` (``n`` copies of the first for variations)."""
        images = form.files_named("image", "image[]")
        if not images:
            self.send_json(400, openai_error(400, "upstream got no 'image' part", param="image"))
            return
        if len(images) == 1:
            images = images * int(form.get("n") or 1)
        data = [{"b64_json": base64.b64encode(f.data).decode()} for f in images]
        self.send_json(200, {"created": int(time.time()), "data": data})

    # -- responses -------------------------------------------------------------------------------------

    def _responses(self, body: dict) -> None:
        """The Responses API: one message output; streamed as its named, numbered events."""
        model = body["model"]
        if body.get("stream") is not True:
            self.send_json(200, responses_object(model, "completed", CONTENT))
            return
        self.start_chunked()
        for i, (name, event) in enumerate(responses_events(model)):
            self.send_event(json.dumps({"type": name, **event, "sequence_number": i}).encode(), name)
            if name == "response.output_text.delta" and model == "gated":
                self.wait_gate()
        self.end_chunked()


# -- payloads ------------------------------------------------------------------------------------------


def _text_object(model: str, choices: list[dict], usage: dict | None = None) -> dict:
    obj = {"id": "cmpl-upstream-1", "object": "text_completion", "created": int(time.time()), "model": model,
           "choices": choices}
    if usage is not None:
        obj["usage"] = usage
    return obj


def _timestamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{separator}{ms % 1000:03d}"


def _subtitles(fmt: str, text: str, duration: float) -> str:
    if fmt == "text":
        return text + "\n"
    if fmt == "srt":
        return f"1\n{_timestamp(0, ',')} --> {_timestamp(duration, ',')}\n{text}\n\n"
    return f"WEBVTT\n\n{_timestamp(0, '.')} --> {_timestamp(duration, '.')}\n{text}\n\n"


def _message_item(status: str, text: str | None) -> dict:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    content = [] if text is None else [part]
    return {"id": "msg_upstream_1", "type": "message", "status": status, "role": "assistant",
            "content": content}


def responses_object(model: str, status: str, text: str | None) -> dict:
    """A Responses API ``response`` object holding one assistant message (none while in progress)."""
    done = status == "completed"
    usage = {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 10}
    return {
        "id": "resp_upstream_1", "object": "response", "created_at": int(time.time()), "status": status,
        "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None,
        "model": model, "output": [_message_item("completed", text)] if done else [],
        "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage if done else None, "user": None,
        "metadata": {},
    }


def responses_events(model: str) -> Iterator[tuple[str, dict]]:
    """The events of a streamed response, in OpenAI's order, without ``type`` and ``sequence_number``."""
    ids = {"item_id": "msg_upstream_1", "output_index": 0, "content_index": 0}
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield "response.created", {"response": responses_object(model, "in_progress", None)}
    yield "response.in_progress", {"response": responses_object(model, "in_progress", None)}
    yield "response.output_item.added", {"output_index": 0, "item": _message_item("in_progress", None)}
    yield "response.content_part.added", {**ids, "part": empty}
    for i, word in enumerate(CONTENT.split(" ")):
        yield "response.output_text.delta", {**ids, "delta": word if i == 0 else " " + word, "logprobs": []}
    yield "response.output_text.done", {**ids, "text": CONTENT, "logprobs": []}
    yield "response.content_part.done", {**ids, "part": {**empty, "text": CONTENT}}
    yield "response.output_item.done", {"output_index": 0, "item": _message_item("completed", CONTENT)}
    yield "response.completed", {"response": responses_object(model, "completed", CONTENT)}
