"""question-answering: extractive spans from a context (AutoModelForQuestionAnswering + span decoding).

transformers 5 removed the question-answering pipeline; this follows its scoring: per window of the context,
softmax over start and end logits restricted to context tokens, best spans with start <= end and at most
``max_answer_len`` tokens, score = p(start) * p(end); the "no answer" score is the CLS position's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuq.common.errors import ModelLoadError
from gpuq.common.jobs.inference import QuestionAnsweringParams
from gpuq.worker.inference.base import (LoadSpec, SimpleTask, TextModel, load_pretrained, no_grad,
                                        register_task)


@dataclass(frozen=True)
class Item:
    question: str
    context: str
    top_k: int
    max_answer_len: int
    handle_impossible_answer: bool


class QuestionAnswering(SimpleTask):
    name = "question-answering"
    loader = "question-answering"

    def load(self, spec: LoadSpec) -> Any:
        loaded = load_pretrained(spec, "AutoModelForQuestionAnswering")
        if not getattr(loaded.tokenizer, "is_fast", False):
            raise ModelLoadError("question-answering needs a fast tokenizer (for character offsets)")
        return loaded

    def group(self, params: QuestionAnsweringParams) -> Any:
        return params.max_seq_len, params.doc_stride

    def prepare(self, resident: TextModel, inputs: list[Any], params: QuestionAnsweringParams) -> list[Any]:
        top_k, max_len = params.top_k, params.max_answer_len
        impossible = params.handle_impossible_answer
        return [Item(x["question"], x["context"], top_k, max_len, impossible) for x in inputs]

    def forward(self, resident: TextModel, items: list[Item], params: QuestionAnsweringParams,
                stream: Any) -> list[Any]:
        tok = resident.tokenizer
        question_first = tok.padding_side == "right"
        pair = ([i.question for i in items], [i.context for i in items])
        enc = tok(*(pair if question_first else pair[::-1]), padding=True, return_tensors="pt",
                  truncation="only_second" if question_first else "only_first",
                  max_length=params.max_seq_len, stride=params.doc_stride,
                  return_overflowing_tokens=True, return_offsets_mapping=True)
        samples = enc.pop("overflow_to_sample_mapping").tolist()
        offsets = enc.pop("offset_mapping").tolist()
        context_id = 1 if question_first else 0
        with no_grad():
            out = resident.model(**enc.to(resident.device))
        starts, ends = out.start_logits.float().cpu(), out.end_logits.float().cpu()
        spans: list[list[tuple[float, int, int]]] = [[] for _ in items]
        null: list[float] = [1.0] * len(items)
        for f, sample in enumerate(samples):
            in_context = [s == context_id for s in enc.sequence_ids(f)]
            found, none = _spans(starts[f], ends[f], in_context, offsets[f], items[sample].max_answer_len,
                                 items[sample].top_k)
            spans[sample].extend(found)
            null[sample] = min(null[sample], none)
        return [_answers(item, spans[i], null[i]) for i, item in enumerate(items)]


def _spans(start: Any, end: Any, in_context: list[bool], offsets: list[list[int]], max_len: int,
           top_k: int) -> tuple[list[tuple[float, int, int]], float]:
    """Best (score, start char, end char) spans of one window, and its no-answer score."""
    import torch

    keep = torch.tensor(in_context)
    keep[0] = True  # CLS stays in the softmax: it carries the no-answer score
    p_start = torch.softmax(start.masked_fill(~keep, -10000.0), dim=-1)
    p_end = torch.softmax(end.masked_fill(~keep, -10000.0), dim=-1)
    none = float(p_start[0] * p_end[0])
    p_start[0] = p_end[0] = 0.0
    p_start, p_end = p_start * torch.tensor(in_context), p_end * torch.tensor(in_context)
    pairs = torch.outer(p_start, p_end)
    scores = torch.triu(pairs) - torch.triu(pairs, diagonal=max_len)  # end >= start, at most max_len tokens
    flat = scores.flatten()
    best = flat.topk(min(top_k, flat.numel())).indices.tolist()
    width = scores.shape[1]
    found = []
    for index in best:
        s, e = divmod(index, width)
        if flat[index] > 0 and in_context[s] and in_context[e]:
            found.append((float(flat[index]), offsets[s][0], offsets[e][1]))
    return found, none


def _answers(item: Item, spans: list[tuple[float, int, int]], null: float) -> Any:
    best: dict[tuple[int, int], float] = {}
    for score, start, end in spans:
        best[(start, end)] = max(score, best.get((start, end), 0.0))
    rows = [{"score": score, "start": s, "end": e, "answer": item.context[s:e]}
            for (s, e), score in best.items()]
    if item.handle_impossible_answer:
        rows.append({"score": null, "start": 0, "end": 0, "answer": ""})
    rows.sort(key=lambda r: r["score"], reverse=True)
    rows = rows[: item.top_k] or [{"score": 0.0, "start": 0, "end": 0, "answer": ""}]
    return rows[0] if item.top_k == 1 else rows


TASK = register_task(QuestionAnswering())
