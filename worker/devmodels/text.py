"""Tiny decoder-only and encoder-decoder language models: GPT-2 and T5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from gpuq.worker.devmodels._save import save_all, seeded
from gpuq.worker.devmodels.tokenizing import gpt2_tokenizer, t5_tokenizer, write_vocab_files

GPT2_POSITIONS = 1024

# The prefixes t5-small ships with; handlers standing in for the removed summarization / translation
# pipelines read them.
T5_TASK_PARAMS = {
    "summarization": {"prefix": "summarize: ", "max_length": 64, "min_length": 4, "num_beams": 2},
    "translation_en_to_de": {"prefix": "translate English to German: ", "max_length": 64},
    "translation_en_to_fr": {"prefix": "translate English to French: ", "max_length": 64},
    "translation_en_to_ro": {"prefix": "translate English to Romanian: ", "max_length": 64},
}


def build_tiny_gpt2(path: Path) -> Path:
    """Build a 2-layer, 32-wide GPT2LMHeadModel with a byte-level BPE tokenizer into ``path``."""
    return _gpt2(path, initializer_range=0.02)


# A template in the shape real ones have (one turn per message, the assistant's turn opened on request), which,
# as many do, refuses roles it does not know.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_chat_gpt2(path: Path) -> Path:
    """The tiny GPT-2 with a chat template, initialised with larger weights so that greedy text varies from
    token to token (the plain one repeats a token), which tests comparing generated texts need."""
    return _gpt2(path, initializer_range=0.5, chat_template=CHAT_TEMPLATE)


def _gpt2(path: Path, initializer_range: float, chat_template: str | None = None) -> Path:
    tokenizer = gpt2_tokenizer(max_length=GPT2_POSITIONS)
    if chat_template:
        tokenizer.chat_template = chat_template
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=GPT2_POSITIONS,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_inner=64,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        initializer_range=initializer_range,
    )
    with seeded():
        model = GPT2LMHeadModel(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    save_all(path, model, tokenizer)
    write_vocab_files(tokenizer, path)
    return path


def _t5_extras(pad_id: int) -> dict[str, Any]:
    # Not dataclass fields of T5Config in transformers 5, but kept on the config: T5's _shift_right (training
    # with labels) reads decoder_start_token_id, and task_specific_params carries the task prefixes.
    return {"decoder_start_token_id": pad_id, "task_specific_params": T5_TASK_PARAMS}


def build_tiny_t5(path: Path) -> Path:
    """Build a tiny T5ForConditionalGeneration (d_model 32) with a Unigram tokenizer into ``path``."""
    tokenizer = t5_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **_t5_extras(tokenizer.pad_token_id),
    )
    with seeded():
        model = T5ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return save_all(path, model, tokenizer)
