"""summarization, translation and text2text-generation: an encoder-decoder model's ``generate``.

transformers 5 removed these pipelines. As they did, the input gets the task prefix the model's config names
in ``task_specific_params`` (T5: "summarize: ", "translate English to German: " under
``translation_en_to_de``); models with language codes (mBART, NLLB, M2M100) get ``src_lang`` on the tokenizer
and ``tgt_lang`` forced as the first generated token.
"""
from __future__ import annotations

from typing import Any

from gpuq.common.jobs.inference import GenerateParams, TranslationParams
from gpuq.worker.inference.base import (LoadSpec, SimpleTask, TextModel, load_pretrained, no_grad,
                                        register_task)
from gpuq.worker.inference.generation import generate_kwargs, generation_group, seed_for


class Seq2Seq(SimpleTask):
    loader = "seq2seq-lm"

    def __init__(self, name: str, output_key: str) -> None:
        self.name = name
        self.output_key = output_key

    def load(self, spec: LoadSpec) -> Any:
        return load_pretrained(spec, "AutoModelForSeq2SeqLM")

    def group(self, params: GenerateParams) -> Any:
        return generation_group(params, *_languages_of(params))

    def task_key(self, params: GenerateParams) -> str:
        """The ``task_specific_params`` entry for this job."""
        if self.name == "translation":
            src, tgt = _languages_of(params)
            return f"translation_{src}_to_{tgt}"
        return self.name

    def forward(self, resident: TextModel, items: list[str], params: GenerateParams,
                stream: Any) -> list[Any]:
        tok, model = resident.tokenizer, resident.model
        specific = (getattr(model.config, "task_specific_params", None) or {}).get(self.task_key(params), {})
        prefix = specific.get("prefix", "")
        kwargs = generate_kwargs(params)
        if self.name == "translation":
            kwargs.update(self._languages(tok, params))
        enc = tok([prefix + text for text in items], padding=True, truncation=True, return_tensors="pt")
        seed_for(params)
        with no_grad():
            out = model.generate(**enc.to(resident.device), **kwargs)
        return [{self.output_key: text} for text in tok.batch_decode(out, skip_special_tokens=True)]

    @staticmethod
    def _languages(tok: Any, params: GenerateParams) -> dict[str, Any]:
        src, tgt = _languages_of(params)
        if src and hasattr(tok, "src_lang"):
            tok.src_lang = src  # safe: forward passes run one at a time, and src_lang is part of the group
        # Language codes are added special tokens in these tokenizers ("de_DE", "deu_Latn", "__de__"); a plain
        # vocabulary entry that happens to read "de" (T5) must not be forced.
        added = tok.get_added_vocab() if hasattr(tok, "get_added_vocab") else {}
        for token in (tgt, f"__{tgt}__"):
            if tgt and token in added:
                return {"forced_bos_token_id": int(added[token])}
        return {}


def _languages_of(params: GenerateParams) -> tuple[str | None, str | None]:
    """(src_lang, tgt_lang) of a translation job; (None, None) for the other seq2seq tasks."""
    if isinstance(params, TranslationParams):
        return params.src_lang, params.tgt_lang
    return None, None


SUMMARIZATION = register_task(Seq2Seq("summarization", "summary_text"))
TRANSLATION = register_task(Seq2Seq("translation", "translation_text"))
TEXT2TEXT = register_task(Seq2Seq("text2text-generation", "generated_text"))
