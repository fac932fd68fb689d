"""Moderation as classification: the model answers a constrained verdict over a stated category list.

The verdict schema is ``{"flagged": bool, "categories": [one of the configured categories, ...]}`` (an
enum per item, no repeats), so the answer always parses and can only name known categories. Any
``NLPService`` with a schematic generator moderates this way: a local model, a remote one, the switcher.
"""

from __future__ import annotations

from collections.abc import Sequence

from .interface import ModerationCheck, ModerationService, NLPService

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


class ModelModeration(ModerationService):
    """``await moderate(text) -> ModerationCheck(flagged, tags)`` through ``service``'s schematic generator.

    A text is flagged when the model says so or names a category: a category without the flag is the
    model contradicting itself, and moderation errs towards flagging.
    """

    def __init__(self, service: NLPService, categories: Sequence[str] = DEFAULT_CATEGORIES):
        categories = tuple(categories)
        if not categories or not all(isinstance(c, str) and c for c in categories):
            raise ValueError(f"moderation categories must be a non-empty list of non-empty strings, got {categories!r}")
        if len(set(categories)) != len(categories):
            raise ValueError(f"moderation categories repeat: {categories!r}")
        self.service = service
        self.categories = categories
        self._generator = None

    async def moderate(self, text: str) -> ModerationCheck:
        if not isinstance(text, str):
            raise TypeError(f"moderate takes a str, got {type(text).__name__}")
        if self._generator is None:
            self._generator = await self.service.get_schematic_generator(verdict_schema(self.categories))
        prompt = _INSTRUCTIONS.format(categories=", ".join(self.categories), text=text)
        verdict = (await self._generator.generate(prompt, {"temperature": 0.0, "max_tokens": 64})).content
        tags = list(dict.fromkeys(verdict["categories"]))
        return ModerationCheck(flagged=bool(verdict["flagged"]) or bool(tags), tags=tags)


__all__ = ["DEFAULT_CATEGORIES", "ModelModeration", "verdict_schema"]
