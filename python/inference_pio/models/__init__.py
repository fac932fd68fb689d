"""Local model management (the seed's ``LocalModelManager`` and ``ModelType``)."""

from .catalogue import Catalogue, CatalogueError, model_home
from .errors import (DigestMismatchError, DownloadError, InvalidModelError, ModelExistsError, ModelManagerError,
                     ModelNotFoundError, UnknownSourceError, UnsafeManifestError)
from .manager import LocalModelManager
from .types import ModelFormat, ModelInfo, ModelSource, ModelType, local_model_id

__all__ = [
    "Catalogue", "CatalogueError", "DigestMismatchError", "DownloadError", "InvalidModelError", "LocalModelManager",
    "ModelExistsError", "ModelFormat", "ModelInfo", "ModelManagerError", "ModelNotFoundError", "ModelSource",
    "ModelType", "UnknownSourceError", "UnsafeManifestError", "local_model_id", "model_home",
]
