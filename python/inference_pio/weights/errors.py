"""The one exception of weight loading: it names the file and the tensors at fault."""

from ..errors import WeightLoadError  # defined at the bottom: the tokenizer raises it too
from ..messages import shorten

__all__ = ["WeightLoadError", "shorten"]
