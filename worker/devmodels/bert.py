"""Tiny BERT heads (sequence/token classification, masked LM, extractive QA, NLI) on one WordPiece vocab."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    PreTrainedModel,
)

from gpuq.worker.devmodels._save import save_all, seeded
from gpuq.worker.devmodels.tokenizing import bert_tokenizer

SENTIMENT_LABELS = ("NEGATIVE", "POSITIVE")
NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
NLI_LABELS = ("entailment", "neutral", "contradiction")


def _config(vocab_size: int, pad_id: int, labels: tuple[str, ...] = ()) -> BertConfig:
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=pad_id,
    )
    if labels:
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    return config


def _build(path: Path, model_cls: type[PreTrainedModel], labels: tuple[str, ...] = ()) -> Path:
    tokenizer = bert_tokenizer()
    config = _config(len(tokenizer), tokenizer.pad_token_id, labels)
    with seeded():
        model = model_cls(config).eval()
    return save_all(path, model, tokenizer)


def build_tiny_bert_classifier(path: Path, labels: tuple[str, ...] = SENTIMENT_LABELS) -> Path:
    """Build a BertForSequenceClassification for text-classification / sentiment-analysis into ``path``."""
    return _build(path, BertForSequenceClassification, tuple(labels))


def build_tiny_bert_token_classifier(path: Path, labels: tuple[str, ...] = NER_LABELS) -> Path:
    """Build a BertForTokenClassification with BIO person/location labels for the NER pipeline."""
    return _build(path, BertForTokenClassification, tuple(labels))


def build_tiny_bert_masked_lm(path: Path) -> Path:
    """Build a BertForMaskedLM for the fill-mask pipeline ([MASK] is the mask token)."""
    return _build(path, BertForMaskedLM)


def build_tiny_bert_qa(path: Path) -> Path:
    """Build a BertForQuestionAnswering (start/end logits) for extractive question answering."""
    return _build(path, BertForQuestionAnswering)


def build_tiny_bert_nli(path: Path) -> Path:
    """Build a 3-way NLI classifier whose label2id lets zero-shot-classification find ``entailment``."""
    return _build(path, BertForSequenceClassification, NLI_LABELS)
