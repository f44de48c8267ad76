"""/v1/embeddings through the official openai SDK on the packaged all-MiniLM-L6-v2."""
from __future__ import annotations

import asyncio
import math

import openai
import pytest

from tests.conftest import KEY_A
from tests.support.openai_sdk import async_client

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_rank_eating_closer_to_bread_than_to_riding(oai: openai.OpenAI, models: dict[str, str]) -> None:
    answer = oai.embeddings.create(model=models["minilm"], input=SENTENCES)  # the SDK asks for base64
    food, bread, horse = (d.embedding for d in answer.data)
    assert len(food) == 384 and abs(math.sqrt(sum(x * x for x in food)) - 1) < 1e-5
    assert _cos(food, bread) > _cos(food, horse)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(SENTENCES)


def test_float_and_base64_encodings_agree(oai: openai.OpenAI, models: dict[str, str]) -> None:
    floats = oai.embeddings.create(model=models["minilm"], input=SENTENCES[0], encoding_format="float")
    packed = oai.embeddings.create(model=models["minilm"], input=SENTENCES[0])
    assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, packed.data[0].embedding)) < 1e-6


def test_token_arrays_embed_like_their_text(oai: openai.OpenAI, models: dict[str, str]) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(models["minilm"])(SENTENCES[0])["input_ids"]
    by_text = oai.embeddings.create(model=models["minilm"], input=SENTENCES[0], encoding_format="float")
    by_ids = oai.embeddings.create(model=models["minilm"], input=[ids, ids[:4]], encoding_format="float")
    assert len(by_ids.data) == 2 and by_ids.usage.prompt_tokens == len(ids) + 4
    assert max(abs(a - b) for a, b in zip(by_text.data[0].embedding, by_ids.data[0].embedding)) < 1e-5


def test_dimensions_truncate_and_renormalise(oai: openai.OpenAI, models: dict[str, str]) -> None:
    full = oai.embeddings.create(model=models["minilm"], input=SENTENCES[1], encoding_format="float")
    short = oai.embeddings.create(model=models["minilm"], input=SENTENCES[1], dimensions=64)
    vector = short.data[0].embedding
    assert len(vector) == 64 and abs(math.sqrt(sum(x * x for x in vector)) - 1) < 1e-5
    assert _cos(vector, full.data[0].embedding[:64]) > 0.9999
    with pytest.raises(openai.BadRequestError) as caught:
        oai.embeddings.create(model=models["minilm"], input="x", dimensions=4096)
    assert caught.value.param == "dimensions"  # type: ignore[attr-defined]


def test_async_client_embeds(api_url: str, models: dict[str, str]) -> None:
    async def scenario() -> int:
        async with async_client(api_url, KEY_A) as aoai:
            answers = await asyncio.gather(*(aoai.embeddings.create(model=models["minilm"], input=s)
                                             for s in SENTENCES))
            return sum(len(a.data) for a in answers)

    assert asyncio.run(scenario()) == 3
