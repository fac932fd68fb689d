"""The one exception of weight loading: it names the file and the tensors at fault."""

from ..messages import shorten

__all__ = ["WeightLoadError", "shorten"]


class WeightLoadError(ValueError):
    """A checkpoint that cannot be loaded: missing, truncated or corrupt files, a broken
    shard index, tensors missing / unexpected / wrongly shaped, or an unsafe format.

    A ``ValueError`` (bad input), like the plugins' ``ConfigError``."""
