"""JSON-schema constrained decoding: the engine's grammar (``engine.grammar``), under the names the
services have always exported."""

from ..engine.grammar import BudgetTooSmallError, GrammarBackend, GrammarLogitsProcessor, tokenizer_info

__all__ = ["BudgetTooSmallError", "GrammarBackend", "GrammarLogitsProcessor", "tokenizer_info"]
