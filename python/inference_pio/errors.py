"""Exceptions shared across the layers, kept at the bottom of the stack.

A layer raises or catches these without importing the layer that used to define them (a Triton
kernel no longer imports the op dispatcher to say "unsupported", the engine's grammar no longer
imports the services for its schema errors). Each one also derives from the built-in kind that says
what went wrong (``ValueError`` for bad input, ``ImportError`` for a missing package), so callers may
catch either. The modules that defined them before re-export them under the same names
(``ops.BackendUnsupported``, ``weights.errors.WeightLoadError``, ``services.schemas.SchemaError``...),
and the layers' own base classes (``PluginError``, ``ModelManagerError``...) derive from
:class:`InferencePioError`.
"""

from __future__ import annotations


class InferencePioError(Exception):
    """Base class of every error inference_pio raises on purpose."""


class BackendUnsupported(InferencePioError, ValueError):
    """An op backend cannot run these particular arguments (an unsupported head dim, say)."""


class WeightLoadError(InferencePioError, ValueError):
    """A checkpoint that cannot be loaded: missing, truncated or corrupt files, a broken
    shard index, tensors missing / unexpected / wrongly shaped, or an unsafe format.

    A ``ValueError`` (bad input), like the plugins' ``ConfigError``."""


class SchemaError(InferencePioError, ValueError):
    """The schema argument is not a type pydantic understands nor a valid JSON schema, or the
    grammar compiler cannot compile it."""


class OutputValidationError(InferencePioError, ValueError):
    """The generated text is not JSON, or does not validate against the schema."""


class BudgetTooSmallError(InferencePioError, ValueError):
    """The output budget cannot hold the shortest valid answer of the schema."""


class MissingExtraError(InferencePioError, ImportError):
    """A feature needs an optional package that is installed with one of the package's extras.

    ``feature`` is what was asked for, ``name`` the module that is missing (as in ``ImportError``),
    ``extra`` the extra that installs it; the message says what to run."""

    def __init__(self, feature: str, name: str, extra: str):
        self.feature, self.extra = feature, extra
        super().__init__(f"{feature} needs {name}, which is not installed: pip install "
                         f"\"inference-pio[{extra}]\"  (from a checkout: pip install \".[{extra}]\")",
                         name=name)


__all__ = ["BackendUnsupported", "BudgetTooSmallError", "InferencePioError", "MissingExtraError",
           "OutputValidationError", "SchemaError", "WeightLoadError"]
