"""Checks for the ``chat`` task at submit: a list of conversations, each a list of ``{role, content}`` messages.

A stand-in for the chat task of the continuous-batching work: same params, inputs and result contract, but
inputs must be a list of conversations (the handler here splits a job's inputs by list items).
"""
from __future__ import annotations

from typing import Any

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.inputs import MAX_TEXT_CHARS, as_list
from gpuq.common.settings import Settings

ROLES = ("system", "developer", "user", "assistant", "tool")


def check_conversations(inputs: Any, settings: Settings) -> list[Any]:
    """A non-empty list of conversations; content parts (``[{"type": "text", "text"}]``) are joined."""
    if not (isinstance(inputs, list) and inputs and all(isinstance(c, list) for c in inputs)):
        raise InvalidInput("inputs: expected a list of conversations (each a list of {role, content} messages)",
                           field="inputs")
    return [_conversation(c, f"inputs.{i}") for i, c in enumerate(as_list(inputs, "a conversation", settings))]


def _conversation(messages: list[Any], field: str) -> list[dict[str, Any]]:
    if not messages:
        raise InvalidInput(f"{field}: a conversation needs at least one message", field=field)
    out = []
    for i, message in enumerate(messages):
        where = f"{field}.{i}"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidInput(f"{where}.role: expected one of {', '.join(ROLES)}", field=f"{where}.role")
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str) or len(content) > MAX_TEXT_CHARS:
            raise InvalidInput(f"{where}.content: expected a string of at most {MAX_TEXT_CHARS} characters",
                               field=f"{where}.content")
        out.append({"role": message["role"], "content": content})
    return out
