"""Handler for the ``tokenizer`` kind: train a BPE, WordPiece or Unigram tokenizer on a text column."""
from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpuq.common.jobs.tokenizer import StoredTokenizerParams, TokenizerParams
from gpuq.worker.context import JobContext
from gpuq.worker.training import data

DEFAULT_SPECIALS = {"bpe": ["<|endoftext|>", "<pad>"], "wordpiece": ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"],
                    "unigram": ["<unk>", "<pad>", "<s>", "</s>"]}
# PreTrainedTokenizerFast keyword for each special token gpuq knows by name.
ROLES = {"[UNK]": "unk_token", "<unk>": "unk_token", "[PAD]": "pad_token", "<pad>": "pad_token",
         "[CLS]": "cls_token", "[SEP]": "sep_token", "[MASK]": "mask_token", "<s>": "bos_token", "</s>": "eos_token",
         "<|endoftext|>": "eos_token"}
CHUNK = 1000


def _build(p: TokenizerParams, specials: list[str]) -> tuple[Any, Any]:
    """(tokenizer, trainer) for the algorithm: byte-level BPE, BERT-style WordPiece, Metaspace Unigram."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    unk = next((t for t in specials if ROLES.get(t) == "unk_token"), None)
    common = {"vocab_size": p.vocab_size, "special_tokens": specials, "show_progress": False}
    if p.algorithm == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(min_frequency=p.min_frequency,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **common)
    elif p.algorithm == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=unk or "[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=p.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(min_frequency=p.min_frequency, **common)
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(unk_token=unk, **common)
    if p.lowercase and p.algorithm != "wordpiece":
        tok.normalizer = normalizers.Lowercase()
    return tok, trainer


def _batches(ctx: JobContext, texts: Any) -> Iterator[list[str]]:
    """The text column in chunks, with a progress point (and cancellation check) per chunk."""
    total = len(texts)
    for start in range(0, total, CHUNK):
        yield [str(t) for t in texts[start:start + CHUNK]["text"]]
        ctx.progress(min(start + CHUNK, total), total, unit="rows")


def _post_process(tok: Any, specials: list[str]) -> None:
    """BERT-style [CLS] ... [SEP] around encodings when both tokens exist (WordPiece defaults)."""
    from tokenizers.processors import TemplateProcessing

    if "[CLS]" in specials and "[SEP]" in specials:
        ids = {t: tok.token_to_id(t) for t in ("[CLS]", "[SEP]")}
        tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                special_tokens=list(ids.items()))


def run(ctx: JobContext) -> Any:
    """Train, store ``tokenizer.json`` and a ``tokenizer/`` folder for AutoTokenizer, report a round trip."""
    from transformers import PreTrainedTokenizerFast

    p = ctx.params_as(StoredTokenizerParams)
    d = p.data.model_copy(update={"shuffle": False})
    rows = data.prepare(data.load_rows(ctx, d), d, [["text"]], split_eval=False).train
    specials = p.special_tokens if p.special_tokens is not None else DEFAULT_SPECIALS[p.algorithm]
    tok, trainer = _build(p, specials)
    tok.train_from_iterator(_batches(ctx, rows), trainer=trainer, length=len(rows))
    _post_process(tok, specials)
    roles = {ROLES[t]: t for t in specials if t in ROLES}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **roles)
    sample = p.sample or str(rows[0]["text"])
    enc = tok.encode(sample)
    decoded = tok.decode(enc.ids)
    with tempfile.TemporaryDirectory(prefix="gpuq-tok-") as tmp:
        tok.save(str(Path(tmp) / "tokenizer.json"))
        ctx.put_artifact_file("tokenizer.json", Path(tmp) / "tokenizer.json")
        fast.save_pretrained(str(Path(tmp) / "tokenizer"))
        ctx.put_artifact_dir("tokenizer", Path(tmp) / "tokenizer")
    result = {"algorithm": p.algorithm, "vocab_size": tok.get_vocab_size(), "rows": len(rows),
              "special_tokens": specials, "artifact": "tokenizer.json",
              "sample": {"text": sample, "tokens": enc.tokens, "ids": enc.ids, "decoded": decoded,
                         "round_trip": decoded == sample}}
    ctx.put_artifact("result.json", json.dumps(result).encode())
    return result
