"""Train tiny tokenizers on the built-in corpus and wrap them in the model's own transformers class.

Each trainer mirrors the normalizer / pre-tokenizer of the real model family, then hands the learned
vocabulary (and merges) to the transformers tokenizer class so the saved files look like the real thing.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizer, CLIPTokenizer, GPT2Tokenizer, T5Tokenizer

from gpuq.worker.devmodels.corpus import sentences

GPT2_EOS = "<|endoftext|>"
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
T5_SPECIALS = ("<pad>", "</s>", "<unk>")
PENALTY_STEP = 1.5e-4  # the Unigram trainer spaces forced-in characters 1e-4 apart


def _corpus_chars() -> list[str]:
    return sorted({c for line in sentences() for c in line.lower() if not c.isspace()})


def _train(tok: Tokenizer, trainer: trainers.Trainer) -> Tokenizer:
    tok.train_from_iterator(sentences(), trainer=trainer)
    return tok


def _vocab_and_merges(tok: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    # Merges go to the transformers classes as (a, b) pairs: their hints say list[str], but the tokenizers BPE
    # they build rejects "a b" strings, hence the type: ignore at those calls.
    model = json.loads(tok.to_str())["model"]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    return dict(model["vocab"]), [(a, b) for a, b in pairs]


def gpt2_tokenizer(vocab_size: int = 768, max_length: int = 1024) -> GPT2Tokenizer:
    """Byte-level BPE like GPT-2; bos = eos = pad = unk = <|endoftext|>."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[GPT2_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    vocab, merges = _vocab_and_merges(_train(tok, trainer))
    return GPT2Tokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]
        pad_token=GPT2_EOS,
        model_max_length=max_length,
    )


def clip_tokenizer(vocab_size: int = 1024, max_length: int = 77) -> CLIPTokenizer:
    """Byte-level BPE with CLIP's lowercasing and ``</w>`` word suffix."""
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        # Pre-registering every "x</w>" keeps the trainer from numbering them in hash-map order, which makes
        # merge tie-breaks (and so the vocab) differ between processes (huggingface/tokenizers#1794).
        special_tokens=[CLIP_BOS, CLIP_EOS, *(c + "</w>" for c in alphabet)],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    vocab, merges = _vocab_and_merges(_train(tok, trainer))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)  # type: ignore[arg-type]


def bert_tokenizer(vocab_size: int = 640, max_length: int = 512) -> BertTokenizer:
    """Uncased WordPiece like bert-base-uncased, with [PAD] [UNK] [CLS] [SEP] [MASK] first."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        # Same determinism fix as CLIP: give every "##x" continuation a fixed id before training starts.
        special_tokens=[*BERT_SPECIALS, *("##" + c for c in _corpus_chars())],
        show_progress=False,
    )
    vocab = _train(tok, trainer).get_vocab()
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=max_length)


def t5_tokenizer(vocab_size: int = 512, max_length: int = 512) -> T5Tokenizer:
    """Unigram (sentencepiece-style, ``▁`` word marker) like T5; <pad>=0, </s>=1, <unk>=2."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(T5_SPECIALS), unk_token="<unk>", show_progress=False
    )
    pieces = json.loads(_train(tok, trainer).to_str())["model"]["vocab"]
    return T5Tokenizer(vocab=_stable_pieces(pieces), extra_ids=0, model_max_length=max_length)


def _stable_pieces(pieces: list[list[str | float]]) -> list[tuple[str, float]]:
    # Two run-to-run differences to remove: EM sums floats in a varying order (last-bit noise), and the
    # trainer appends the characters it must keep with made-up scores 1e-4 apart, in hash-map order. Round the
    # noise away, then hand that trailing run's (fixed) scores to its (fixed) pieces in sorted order.
    specials = [(str(p), 0.0) for p, _ in pieces[: len(T5_SPECIALS)]]
    scored = [(str(p), round(float(s), 6)) for p, s in pieces[len(T5_SPECIALS) :]]
    cut = len(scored) - 1
    while cut > 0 and 0 <= scored[cut - 1][1] - scored[cut][1] <= PENALTY_STEP:
        cut -= 1
    head = sorted(scored[:cut], key=lambda ps: (-ps[1], ps[0]))
    tail = zip(sorted(p for p, _ in scored[cut:]), (s for _, s in scored[cut:]), strict=True)
    return specials + head + list(tail)


def write_vocab_files(tokenizer: GPT2Tokenizer | CLIPTokenizer, directory: Path) -> None:
    """Write classic ``vocab.json`` + ``merges.txt`` beside tokenizer.json, for loaders that look for them."""
    vocab, merges = _vocab_and_merges(tokenizer.backend_tokenizer)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(" ".join(pair) for pair in merges)]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
