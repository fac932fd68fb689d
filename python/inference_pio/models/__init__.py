"""Local model management (the seed's ``LocalModelManager`` and ``ModelType``)."""

from .types import ModelFormat, ModelInfo, ModelSource, ModelType, local_model_id

__all__ = ["ModelFormat", "ModelInfo", "ModelSource", "ModelType", "local_model_id"]
