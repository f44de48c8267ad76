"""Inference tasks, one module each, looked up by name (aliases resolve to the task they name)."""
from __future__ import annotations

from gpuq.worker.inference import (
    chat,
    feature_extraction,
    fill_mask,
    image_classification,
    question_answering,
    seq2seq,
    text_classification,
    text_generation,
    token_classification,
    zero_shot,
)
from gpuq.worker.inference.base import InferenceTask, LoadSpec

TASKS: dict[str, InferenceTask] = {
    task.name: task for task in (
        text_classification.TASK, token_classification.TASK, question_answering.TASK, text_generation.TASK,
        seq2seq.SUMMARIZATION, seq2seq.TRANSLATION, seq2seq.TEXT2TEXT, zero_shot.TASK, fill_mask.TASK,
        feature_extraction.TASK, image_classification.TASK, chat.TASK,
    )
}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


def get_task(name: str) -> InferenceTask:
    """The task registered under ``name`` or an alias of it."""
    return TASKS[ALIASES.get(name, name)]


__all__ = ["ALIASES", "TASKS", "InferenceTask", "LoadSpec", "get_task"]
