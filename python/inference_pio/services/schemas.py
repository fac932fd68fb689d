"""What a schematic generator may be asked for: the engine's :class:`OutputSchema` (``engine.output_schema``),
with its errors, under the names the services have always exported."""

from ..engine.output_schema import OutputSchema, OutputValidationError, SchemaError

__all__ = ["OutputSchema", "OutputValidationError", "SchemaError"]
