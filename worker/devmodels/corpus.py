"""A small built-in English corpus for training throwaway tokenizers.

Sentences are combinations of fixed templates and word lists, so the corpus (and therefore every tokenizer
trained on it) is identical from run to run and needs no download.
"""

from __future__ import annotations

import itertools
from functools import cache

PEOPLE = ("Alice", "Bob", "Carol", "Dave", "Emma", "Frank", "Grace", "Henry", "Ivy", "Jack")
PLACES = ("Paris", "London", "Berlin", "Tokyo", "Madrid", "Rome", "Lisbon", "Oslo", "Cairo", "Lima")
THINGS = ("movie", "book", "song", "meal", "game", "trip", "show", "phone", "car", "garden")
GOOD = ("good", "great", "wonderful", "lovely", "excellent", "fun", "happy", "brilliant")
BAD = ("bad", "terrible", "awful", "boring", "sad", "poor", "dull", "broken")
VERBS = ("likes", "visits", "reads", "watches", "paints", "builds", "writes", "finds")
ANIMALS = ("cat", "dog", "bird", "horse", "fox", "fish", "rabbit", "mouse")
SCENES = ("mountain", "river", "forest", "beach", "city", "desert", "lake", "castle")
STYLES = ("at sunset", "in the rain", "at night", "in winter", "in spring", "under the stars")

_TEMPLATES: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("The {} was {}.", (THINGS, GOOD + BAD)),
    ("I think this {} is {}!", (THINGS, GOOD + BAD)),
    ("{} lives in {}.", (PEOPLE, PLACES)),
    ("{} {} a {} in {}.", (PEOPLE, VERBS, THINGS, PLACES)),
    ("A {} near the {} {}.", (ANIMALS, SCENES, STYLES)),
    ("a photo of a {} by the {}", (ANIMALS, SCENES)),
    ("Where does {} work? {} works in {}.", (PEOPLE, PEOPLE, PLACES)),
    ("What a {} day, said {}.", (GOOD + BAD, PEOPLE)),
)

_FIXED = (
    "Hello world, how are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time there was a small model that could run anywhere.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 appear in text too.",
    "It's a test; don't worry -- it'll be fine (mostly).",
    "summarize: translate English to French: translate English to German: question: context:",
    "yes no maybe true false hello goodbye please thank you",
)

MAX_PER_TEMPLATE = 60


def _fill(template: str, pools: tuple[tuple[str, ...], ...]) -> list[str]:
    combos = itertools.islice(itertools.product(*pools), 0, None, 7)
    return [template.format(*combo) for combo in itertools.islice(combos, MAX_PER_TEMPLATE)]


@cache
def sentences() -> tuple[str, ...]:
    """Return the fixed training corpus (a few hundred short English sentences)."""
    out = list(_FIXED)
    for template, pools in _TEMPLATES:
        out.extend(_fill(template, pools))
    for words in (PEOPLE, PLACES, THINGS, GOOD, BAD, VERBS, ANIMALS, SCENES):
        out.append(" ".join(words) + ".")
    return tuple(out)
