"""Finished generation jobs as OpenAI answers: ``chat.completion`` / ``text_completion`` objects, and the chunks
of their streams (``chat.completion.chunk`` / ``text_completion``) from the jobs' ``output`` events.

A result holds one item per job input (``generated_text``, ``finish_reason``, ``usage``, optionally
``logprobs``, ``message``, and ``choices`` when the task drew several sequences for it).
"""
from __future__ import annotations

from typing import Any

from gpuq.api.openai.generation.jobs import per_input


def choices_of(result: Any) -> list[dict[str, Any]]:
    """Every sequence of a result, in choice order."""
    out: list[dict[str, Any]] = []
    for item in result if isinstance(result, list) else [result]:
        out.extend(item.get("choices", [item]))
    return out


def usage_of(result: Any, n: int) -> dict[str, int]:
    """OpenAI's usage: each prompt counted once, every sequence's tokens."""
    items = result if isinstance(result, list) else [result]
    stride = max(1, n // per_input(n))  # inputs repeated for n choices count their prompt once
    prompt = sum(int(i.get("usage", {}).get("prompt_tokens", 0)) for i in items[::stride])
    completion = sum(int(i.get("usage", {}).get("completion_tokens", 0)) for i in items)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(job_id: str, created: int, model: str, result: Any, n: int) -> dict[str, Any]:
    """The ``chat.completion`` object of a finished chat job."""
    choices = [{"index": k, "message": {"role": "assistant", "content": c["generated_text"], "refusal": None},
                "finish_reason": c.get("finish_reason", "stop"), "logprobs": _chat_logprobs(c)}
               for k, c in enumerate(choices_of(result))]
    return {"id": f"chatcmpl-{job_id}", "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage_of(result, n), "system_fingerprint": None}


def text_completion(job_id: str, created: int, model: str, result: Any, n: int) -> dict[str, Any]:
    """The ``text_completion`` object of a finished text-generation job."""
    choices = [{"index": k, "text": c["generated_text"], "finish_reason": c.get("finish_reason", "stop"),
                "logprobs": _completion_logprobs(c)} for k, c in enumerate(choices_of(result))]
    return {"id": f"cmpl-{job_id}", "object": "text_completion", "created": created, "model": model,
            "choices": choices, "usage": usage_of(result, n), "system_fingerprint": None}


def _chat_logprobs(choice: dict[str, Any]) -> dict[str, Any] | None:
    if "logprobs" not in choice:
        return None

    def one(entry: dict[str, Any]) -> dict[str, Any]:
        return {"token": entry["token"], "logprob": entry["logprob"], "bytes": list(entry["token"].encode())}
    return {"content": [{**one(e), "top_logprobs": [one(t) for t in e.get("top_logprobs", [])]}
                        for e in choice["logprobs"]], "refusal": None}


def _completion_logprobs(choice: dict[str, Any]) -> dict[str, Any] | None:
    if "logprobs" not in choice:
        return None
    entries, offsets, at = choice["logprobs"], [], 0
    for entry in entries:
        offsets.append(at)
        at += len(entry["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e.get("top_logprobs", [])} for e in entries],
            "text_offset": offsets}


class _Stream:
    """Chunks of one streamed job: deltas from ``output`` events, and at the end whatever the result holds
    beyond what was streamed, each choice's ``finish_reason`` and (asked for) the usage chunk."""

    object_name = ""

    def __init__(self, chunk_id: str, created: int, model: str, n_choices: int, n: int, usage: bool) -> None:
        self.head = {"id": chunk_id, "object": self.object_name, "created": created, "model": model}
        self.n_choices, self.n, self.usage = n_choices, n, usage
        self.sent = [""] * n_choices

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """One chunk object (``usage: null`` on every chunk but the last when usage was asked for)."""
        body = {**self.head, "choices": choices, **extra}
        if self.usage and "usage" not in body:
            body["usage"] = None
        return body

    def output(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunk of one ``output`` event (``{index, choice?, text}``)."""
        k = int(data.get("index", 0)) * per_input(self.n) + int(data.get("choice", 0))
        text = str(data.get("text", ""))
        if not text or not 0 <= k < self.n_choices:
            return []
        self.sent[k] += text
        return [self.chunk([self.delta(k, text)])]

    def closing(self, result: Any) -> list[dict[str, Any]]:
        """The last chunks, from the finished job's result."""
        ends = []
        for k, choice in enumerate(choices_of(result)[:self.n_choices]):
            final = str(choice.get("generated_text", ""))
            rest = final[len(self.sent[k]):] if final.startswith(self.sent[k]) else ""
            ends.append({**self.delta(k, rest), "finish_reason": choice.get("finish_reason", "stop")})
        out = [self.chunk(ends)]
        if self.usage:
            out.append(self.chunk([], usage=usage_of(result, self.n)))
        return out

    def delta(self, k: int, text: str) -> dict[str, Any]:
        """Choice ``k`` of a chunk carrying ``text``."""
        raise NotImplementedError


class ChatStream(_Stream):
    """``chat.completion.chunk`` objects; the first carries each choice's role."""

    object_name = "chat.completion.chunk"

    def opening(self) -> list[dict[str, Any]]:
        """The first chunk, sent before any token: each choice's role."""
        return [self.chunk([{"index": k, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None} for k in range(self.n_choices)])]

    def delta(self, k: int, text: str) -> dict[str, Any]:
        """A chat choice delta."""
        return {"index": k, "delta": {"content": text} if text else {}, "logprobs": None, "finish_reason": None}


class CompletionStream(_Stream):
    """``text_completion`` chunks; with ``echo`` the first carries each prompt."""

    object_name = "text_completion"

    def __init__(self, chunk_id: str, created: int, model: str, n_choices: int, n: int, usage: bool,
                 echoed: list[str] | None = None) -> None:
        super().__init__(chunk_id, created, model, n_choices, n, usage)
        self.echoed = echoed

    def opening(self) -> list[dict[str, Any]]:
        """With ``echo``, a first chunk carrying each prompt; else none."""
        if not self.echoed:
            return []
        for k in range(self.n_choices):
            self.sent[k] = self.echoed[k // self.n]
        return [self.chunk([self.delta(k, self.sent[k]) for k in range(self.n_choices)])]

    def delta(self, k: int, text: str) -> dict[str, Any]:
        """A completion choice's text."""
        return {"index": k, "text": text, "logprobs": None, "finish_reason": None}
