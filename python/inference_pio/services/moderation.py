"""Moderation as classification over a stated category list, and when a model is too small to judge.

``CalibratedModeration`` (local models): the model is asked for one label (``0`` safe, ``1``.. a category)
and the softmax of its logits over exactly those label tokens gives each category's probability; a
category is flagged when its probability reaches ``threshold``. Reading probabilities, rather than
trusting whatever a free or constrained answer lists, keeps a weak model's indifference (every label
about equally likely) from reading as a verdict.

``ModelModeration`` (any service with a schematic generator: remote, switcher): a constrained verdict
``{"flagged": bool, "categories": [...]}``; the categories only count when the model flags.

Small models cannot judge: a service moderates by default only when its model has at least
``MIN_MODERATION_PARAMETERS`` (1e9) parameters; below that (or of unknown size) it answers "not flagged"
unless built with ``moderation=True``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from .interface import ModerationCheck, ModerationService, NLPService

MIN_MODERATION_PARAMETERS = 1_000_000_000
DEFAULT_THRESHOLD = 0.5
_LABELS = "123456789abcdefghijklmnopqrstuvwxyz"  # category labels ("0" is safe): single tokens in common vocabularies

# Parlant's ModerationTag values.
DEFAULT_CATEGORIES = ("jailbreak", "harassment", "hate", "illicit", "self-harm", "sexual", "violence")

_INSTRUCTIONS = (
    "You are a content moderation classifier. Decide whether the text below must be flagged, and list "
    "every category it falls under, chosen only from: {categories}. A text that falls under none of them "
    "is not flagged and has an empty list.\n\nText:\n<<<\n{text}\n>>>"
)


def verdict_schema(categories: Sequence[str]) -> dict:
    """The JSON schema of a verdict over ``categories``."""
    return {
        "title": "ModerationVerdict",
        "type": "object",
        "properties": {
            "flagged": {"type": "boolean"},
            "categories": {"type": "array", "items": {"enum": list(categories)}, "uniqueItems": True,
                           "maxItems": len(categories)},
        },
        "required": ["flagged", "categories"],
        "additionalProperties": False,
    }


def moderation_enabled(setting: bool | None, parameter_count: int | None) -> bool:
    """``setting`` when given; else whether the model is big enough to judge (unknown size: no)."""
    if setting is not None:
        return bool(setting)
    return parameter_count is not None and parameter_count >= MIN_MODERATION_PARAMETERS


def _checked_categories(categories: Sequence[str]) -> tuple[str, ...]:
    categories = tuple(categories)
    if not categories or not all(isinstance(c, str) and c for c in categories):
        raise ValueError(f"moderation categories must be a non-empty list of non-empty strings, got {categories!r}")
    if len(set(categories)) != len(categories):
        raise ValueError(f"moderation categories repeat: {categories!r}")
    return categories


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise TypeError(f"moderate takes a str, got {type(text).__name__}")


class NoModeration(ModerationService):
    """Never flags: the default of a service whose model is too small to judge."""

    async def moderate(self, text: str) -> ModerationCheck:
        _check_text(text)
        return ModerationCheck(flagged=False, tags=[])


_LABEL_PROMPT = (
    "You are a content moderation classifier. Read the text below and reply with one label:\n"
    "0: safe (none of the categories below)\n{options}\n\nText:\n<<<\n{text}\n>>>\n\nLabel:"
)

# (prompt, labels) -> the probability of each label (they sum to 1).
LabelScorer = Callable[[str, Sequence[str]], Awaitable[Sequence[float]]]


class CalibratedModeration(ModerationService):
    """Category probabilities from the model's logits over the label tokens; flagged at ``threshold``.

    ``score(prompt, labels)``: the probabilities the model gives each label as its next token (a local
    service's ``label_probabilities``). ``last_probabilities`` keeps the latest check's, per category.
    """

    def __init__(self, score: LabelScorer, categories: Sequence[str] = DEFAULT_CATEGORIES,
                 threshold: float = DEFAULT_THRESHOLD):
        self.categories = _checked_categories(categories)
        if len(self.categories) > len(_LABELS):
            raise ValueError(f"calibrated moderation takes at most {len(_LABELS)} categories, "
                             f"got {len(self.categories)}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._score = score
        self.last_probabilities: dict[str, float] = {}

    async def moderate(self, text: str) -> ModerationCheck:
        _check_text(text)
        labels = ["0", *_LABELS[:len(self.categories)]]
        options = "\n".join(f"{label}: {category}" for label, category in zip(labels[1:], self.categories))
        probabilities = await self._score(_LABEL_PROMPT.format(options=options, text=text), labels)
        self.last_probabilities = dict(zip(self.categories, map(float, probabilities[1:])))
        tags = [c for c, p in self.last_probabilities.items() if p >= self.threshold]
        return ModerationCheck(flagged=bool(tags), tags=tags)


class ModelModeration(ModerationService):
    """``await moderate(text) -> ModerationCheck(flagged, tags)`` through ``service``'s schematic generator.

    Flagged only when the model says so; the categories it lists count only then (a weak model lists
    categories for harmless text while answering ``flagged: false``).
    """

    def __init__(self, service: NLPService, categories: Sequence[str] = DEFAULT_CATEGORIES):
        self.service = service
        self.categories = _checked_categories(categories)
        self._generator = None

    async def moderate(self, text: str) -> ModerationCheck:
        _check_text(text)
        if self._generator is None:
            self._generator = await self.service.get_schematic_generator(verdict_schema(self.categories))
        prompt = _INSTRUCTIONS.format(categories=", ".join(self.categories), text=text)
        verdict = (await self._generator.generate(prompt, {"temperature": 0.0, "max_tokens": 64})).content
        flagged = bool(verdict["flagged"])
        return ModerationCheck(flagged=flagged, tags=list(dict.fromkeys(verdict["categories"])) if flagged else [])


__all__ = ["CalibratedModeration", "DEFAULT_CATEGORIES", "MIN_MODERATION_PARAMETERS", "ModelModeration",
           "NoModeration", "moderation_enabled", "verdict_schema"]
