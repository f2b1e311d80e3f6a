"""A subset of OpenAI's Responses API (``POST /v1/responses``) served by an Anthropic account: text,
images, function tools, and streaming events. Anything else is a 400 naming the field.

Sources: https://platform.openai.com/docs/api-reference/responses/create (request and the response
object), https://platform.openai.com/docs/api-reference/responses-streaming (events: each has ``type``
and ``sequence_number``, sent as ``event: TYPE`` / ``data: JSON``; the stream ends with
``response.completed`` / ``response.incomplete`` and has no ``[DONE]``). Mapping: ``docs/protocol.md`` §9.3.

Not supported (400): ``previous_response_id``, ``conversation``, ``background``, ``prompt``, built-in
tools (web_search, file_search, computer use, code interpreter, MCP, ...), input items other than
messages, ``function_call`` and ``function_call_output`` (reasoning items, item references). Nothing is
stored, so ``store`` is degraded. Thinking is not returned as reasoning items.
"""

from __future__ import annotations

import json

from .chat_stream import KEEPALIVE, SSEEvents, anthropic_events
from .from_chat import apply_response_format, tool_input
from .openai_errors import error_from_anthropic
from .openai_parts import (DEFAULT_MAX_TOKENS, Turns, apply_effort, apply_sampling, apply_tool_choice, bad,
                           content_blocks, max_tokens_value, output_tokens, prompt_tokens, tool_choice,
                           tool_definition, tool_result_content)

REFUSED_FIELDS = ("previous_response_id", "conversation", "background", "prompt")
DROPPED_FIELDS = ("store", "include", "metadata", "truncation", "max_tool_calls", "service_tier", "top_logprobs",
                  "prompt_cache_key")
KNOWN_FIELDS = frozenset({"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
                          "max_output_tokens", "temperature", "top_p", "stream", "stream_options", "user",
                          "safety_identifier", "reasoning", "text"})


def _input(items: object, degraded: list[str]) -> tuple[list[str], list[dict]]:
    if isinstance(items, str):
        return [], [{"role": "user", "content": items}] if items else []
    if not isinstance(items, list) or not items:
        raise bad("input must be a string or a non-empty list of items", "input")
    system: list[str] = []
    turns = Turns()
    for i, item in enumerate(items):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad(f"{at} must be an object", at)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            blocks = content_blocks(item.get("content"), f"{at}.content", degraded)
            if role in ("system", "developer"):
                if any(b["type"] != "text" for b in blocks):
                    raise bad(f"{at}.content: a {role} message may hold text only", f"{at}.content")
                system.extend(b["text"] for b in blocks)
            elif role in ("user", "assistant"):
                turns.add(role, blocks)
            else:
                raise bad(f"{at}.role: {role!r} is not supported", f"{at}.role")
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
                raise bad(f"{at}: a function_call needs call_id and name", at)
            turns.add("assistant", [{"type": "tool_use", "id": call_id, "name": name,
                                     "input": tool_input(item.get("arguments"), f"{at}.arguments")}])
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad(f"{at}.call_id is missing", f"{at}.call_id")
            turns.add("user", [{"type": "tool_result", "tool_use_id": call_id,
                                "content": tool_result_content(item.get("output"), f"{at}.output", degraded)}])
        else:
            raise bad(f"{at}.type: input items of type {kind!r} are not supported", f"{at}.type")
    return system, turns.messages()


def messages_request(body: dict) -> tuple[dict, list[str]]:
    """A Responses API request body → (Anthropic Messages body, degraded field names).

    ``input`` (string or items) → messages; ``instructions`` and system/developer items → ``system``;
    function tools (flat ``{type: function, name, description, parameters, strict}``) → tools;
    ``tool_choice``, ``parallel_tool_calls``, ``temperature``, ``top_p`` as for Chat Completions;
    ``max_output_tokens`` → ``max_tokens`` (default 4096); ``reasoning.effort`` → thinking budget;
    ``text.format`` json_schema → ``output_config.format``; ``user`` / ``safety_identifier`` →
    ``metadata.user_id``. Raises :class:`~shunt_lib.errors.InvalidOpenAIRequest` naming the field
    for what is not supported (see the module docstring).
    """
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model is required", "model")
    for key in REFUSED_FIELDS:
        if body.get(key) is not None and body.get(key) is not False:
            raise bad(f"{key} is not supported: shunt keeps no responses or conversations", key)
    degraded: list[str] = []
    system, messages = _input(body.get("input"), degraded)
    if not messages:
        raise bad("input holds no user or assistant content", "input")
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        system.insert(0, instructions)
    out: dict = {"model": model}
    if system:
        out["system"] = "\n\n".join(system)
    out["messages"] = messages
    explicit_max = max_tokens_value(body.get("max_output_tokens"), "max_output_tokens")
    out["max_tokens"] = explicit_max or DEFAULT_MAX_TOKENS
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise bad("tools must be a list", "tools")
    defined = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise bad(f"tools[{i}].type: {kind!r} tools are not supported (function tools only)", f"tools[{i}].type")
        defined.append(tool_definition(tool.get("name"), tool.get("description"), tool.get("parameters"),
                                       tool.get("strict"), f"tools[{i}]"))
    if defined:
        out["tools"] = defined
        apply_tool_choice(out, tool_choice(body.get("tool_choice"), {t["name"] for t in defined}, "tool_choice"),
                          body.get("parallel_tool_calls"))
    elif body.get("tool_choice") not in (None, "auto", "none"):
        raise bad("tool_choice: no function tools are defined", "tool_choice")
    apply_sampling(out, body.get("temperature"), body.get("top_p"), degraded)
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    apply_response_format(text.get("format"), out, degraded, "text.format")
    if text.get("verbosity") not in (None, "medium"):
        degraded.append("text.verbosity")
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    apply_effort(out, reasoning.get("effort"), explicit_max, "reasoning.effort", degraded)
    if reasoning.get("summary") is not None:
        degraded.append("reasoning.summary")
    if body.get("stream") is True:
        out["stream"] = True
    for key in DROPPED_FIELDS:
        if body.get(key) not in (None, False, [], {}, "disabled", "auto", "default"):
            degraded.append(key)
    degraded.extend(k for k in body if k not in KNOWN_FIELDS and k not in DROPPED_FIELDS
                    and k not in REFUSED_FIELDS)
    return out, degraded


def _usage(usage: object) -> dict:
    """Anthropic usage → the Responses ``usage`` (input counts cache reads and writes)."""
    usage = usage if isinstance(usage, dict) else {}
    prompt, cached = prompt_tokens(usage)
    out = output_tokens(usage)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + out}


def _message_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []}


def _call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {"type": "function_call", "id": "fc_" + call_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def _response(response_id: str, model: str, created_s: int, output: list[dict], stop_reason: object,
              usage: object, status: str | None = None) -> dict:
    incomplete = stop_reason in ("max_tokens", "model_context_window_exceeded")
    status = status or ("incomplete" if incomplete else "completed")
    return {"id": response_id, "object": "response", "created_at": created_s, "status": status,
            "model": model, "output": output, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "metadata": {},
            "usage": _usage(usage) if status != "in_progress" else None}


def response_object(anthropic_message: dict, model: str, created_s: int) -> dict:
    """A non-streaming Anthropic message → a Responses ``response`` object. Each text block is a
    ``message`` item with one ``output_text`` part (id ``msg_<message id>_<n>``); each tool_use a
    ``function_call`` item (``call_id`` = the tool_use id, ``arguments`` its input as JSON); thinking
    and other blocks are left out. ``max_tokens`` → ``status: incomplete`` with
    ``incomplete_details.reason: max_output_tokens``."""
    mid = str(anthropic_message.get("id") or "")
    output = []
    for block in anthropic_message.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            output.append(_message_item(f"msg_{mid}_{len(output)}", block.get("text") or ""))
        elif kind == "tool_use":
            output.append(_call_item(str(block.get("id")), str(block.get("name")),
                                     json.dumps(block.get("input") or {}, ensure_ascii=False)))
    return _response("resp_" + mid, model, created_s, output, anthropic_message.get("stop_reason"),
                     anthropic_message.get("usage"))


class ResponsesEventsFromAnthropic:
    """A state machine: Anthropic SSE bytes in (:meth:`feed`, split anywhere), Responses API events out.

    ``message_start`` → ``response.created`` and ``response.in_progress``; a text block →
    ``response.output_item.added`` (message), ``response.content_part.added``, one
    ``response.output_text.delta`` per text delta, then ``response.output_text.done``,
    ``response.content_part.done``, ``response.output_item.done``; a tool_use block →
    ``response.output_item.added`` (function_call), ``response.function_call_arguments.delta`` per
    fragment, ``response.function_call_arguments.done`` (``{}`` when none came),
    ``response.output_item.done``; ``message_stop`` → ``response.completed`` (or
    ``response.incomplete`` on max_tokens) carrying the same object :func:`response_object` gives;
    ``ping`` → an SSE comment; an Anthropic ``error`` → an ``error`` event (``code``, ``message``,
    ``param``) then ``response.failed``. Ids are as in
    :func:`response_object`: ``response_id_prefix`` + the Anthropic message id (from ``message_start``).
    """

    def __init__(self, model: str, response_id_prefix: str, created_s: int):
        self.model, self.prefix, self.created_s = model, response_id_prefix, created_s
        self.finished = False
        self._events = SSEEvents()
        self._seq = 0
        self._mid = ""
        self._usage: dict = {}
        self._stop: object = None
        self._output: list[dict] = []
        self._open: dict[int, dict] = {}  # Anthropic block index → {"out": output index, "kind", "text"}

    @property
    def response_id(self) -> str:
        return self.prefix + self._mid

    def _event(self, kind: str, **fields) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return (b"event: " + kind.encode() + b"\ndata: "
                + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next piece of Anthropic's stream; return the Responses events it completes."""
        out: list[bytes] = []
        for kind, event in anthropic_events(self._events, data):
            if self.finished:
                break
            self._on_event(kind, event, out)
        return out

    def _on_event(self, kind: str, event: dict, out: list[bytes]) -> None:
        if kind == "message_start":
            message = event.get("message") if isinstance(event.get("message"), dict) else {}
            self._mid = str(message.get("id") or "")
            self._usage.update(message.get("usage") or {})
            shell = _response(self.response_id, self.model, self.created_s, [], None, None, "in_progress")
            out.append(self._event("response.created", response=shell))
            out.append(self._event("response.in_progress", response=shell))
        elif kind == "content_block_start":
            self._block_start(event.get("index"), event.get("content_block") or {}, out)
        elif kind == "content_block_delta":
            self._delta(event.get("index"), event.get("delta") or {}, out)
        elif kind == "content_block_stop":
            self._block_stop(event.get("index"), out)
        elif kind == "message_delta":
            self._usage.update((k, v) for k, v in (event.get("usage") or {}).items() if v is not None)
            self._stop = (event.get("delta") or {}).get("stop_reason") or self._stop
        elif kind == "message_stop":
            final = _response(self.response_id, self.model, self.created_s, self._output, self._stop, self._usage)
            out.append(self._event("response." + final["status"], response=final))
            self.finished = True
        elif kind == "ping":
            out.append(KEEPALIVE)
        elif kind == "error":
            error = error_from_anthropic(200, event)
            out.append(self._event("error", code=error["code"] or error["type"], message=error["message"],
                                   param=None))
            failed = _response(self.response_id, self.model, self.created_s, self._output, None, self._usage,
                               "failed")
            failed["error"] = {"code": error["code"] or error["type"], "message": error["message"]}
            out.append(self._event("response.failed", response=failed))
            self.finished = True

    def _block_start(self, index: object, block: dict, out: list[bytes]) -> None:
        kind = block.get("type")
        if not isinstance(index, int) or kind not in ("text", "tool_use"):
            return
        at = len(self._output)
        if kind == "text":
            item = _message_item(f"msg_{self._mid}_{at}", "", "in_progress")
            state = {"out": at, "kind": kind, "text": block.get("text") or "", "item": item}
            out.append(self._event("response.output_item.added", output_index=at, item=item))
            out.append(self._event("response.content_part.added", item_id=item["id"], output_index=at,
                                   content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
            if state["text"]:
                out.append(self._event("response.output_text.delta", item_id=item["id"], output_index=at,
                                       content_index=0, delta=state["text"]))
        else:
            item = _call_item(str(block.get("id")), str(block.get("name")), "", "in_progress")
            state = {"out": at, "kind": kind, "text": "", "item": item}
            out.append(self._event("response.output_item.added", output_index=at, item=item))
        self._output.append(item)
        self._open[index] = state

    def _delta(self, index: object, delta: dict, out: list[bytes]) -> None:
        state = self._open.get(index) if isinstance(index, int) else None
        if state is None:
            return
        item_id, at = state["item"]["id"], state["out"]
        if state["kind"] == "text" and delta.get("type") == "text_delta" and delta.get("text"):
            state["text"] += delta["text"]
            out.append(self._event("response.output_text.delta", item_id=item_id, output_index=at, content_index=0,
                                   delta=delta["text"]))
        elif state["kind"] == "tool_use" and delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            state["text"] += delta["partial_json"]
            out.append(self._event("response.function_call_arguments.delta", item_id=item_id, output_index=at,
                                   delta=delta["partial_json"]))

    def _block_stop(self, index: object, out: list[bytes]) -> None:
        state = self._open.pop(index, None) if isinstance(index, int) else None
        if state is None:
            return
        at, text = state["out"], state["text"]
        if state["kind"] == "text":
            item = _message_item(state["item"]["id"], text)
            part = item["content"][0]
            out.append(self._event("response.output_text.done", item_id=item["id"], output_index=at, content_index=0,
                                   text=text))
            out.append(self._event("response.content_part.done", item_id=item["id"], output_index=at,
                                   content_index=0, part=part))
        else:
            old = state["item"]
            item = _call_item(old["call_id"], old["name"], text or "{}")
            out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=at,
                                   arguments=item["arguments"]))
        self._output[at] = item
        out.append(self._event("response.output_item.done", output_index=at, item=item))
