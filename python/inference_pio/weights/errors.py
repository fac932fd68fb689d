"""The one exception of weight loading: it names the file and the tensors at fault."""


class WeightLoadError(Exception):
    """A checkpoint that cannot be loaded: missing, truncated or corrupt files, a broken
    shard index, tensors missing / unexpected / wrongly shaped, or an unsafe format."""
