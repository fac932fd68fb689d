"""NLP services (seed 000): local models, an OpenAI-compatible remote, the model switcher and the factory.

Every service follows :class:`~inference_pio.services.interface.NLPService` (Parlant's NLP interfaces):
a schematic generator (JSON-schema constrained output, validated), an embedder, a moderation service
and a token counter, all async.
"""

from .config import ConfigError, ServicesConfig, load_config
from .factory import NLPServiceFactory, NoServiceAvailableError, UnknownServiceError
from .interface import (EmbeddingResult, Embedder, EstimatingTokenizer, GenerationInfo, ModerationCheck,
                        ModerationService, NLPService, SchematicGenerationResult, SchematicGenerator, ServiceError,
                        StreamingTextGenerator, TextStream, UsageInfo)
from .local import (DeepSeekService, LlamaService, LocalModelService, MistralService, QwenService, UnknownModelError,
                    local_service)
from .model_health import ModelFigures
from .moderation import DEFAULT_CATEGORIES, ModelModeration
from .openai_remote import OpenAIRemoteService, RemoteServiceError
from .schemas import OutputSchema, OutputValidationError, SchemaError
from .switcher import AllModelsFailedError, ModelSwitcher

__all__ = [
    "AllModelsFailedError", "ConfigError", "DEFAULT_CATEGORIES", "DeepSeekService", "EmbeddingResult", "Embedder",
    "EstimatingTokenizer", "GenerationInfo", "LlamaService", "LocalModelService", "MistralService", "ModelFigures",
    "ModelModeration", "ModelSwitcher", "ModerationCheck", "ModerationService", "NLPService", "NLPServiceFactory",
    "NoServiceAvailableError", "OpenAIRemoteService", "OutputSchema", "OutputValidationError", "QwenService",
    "RemoteServiceError", "SchemaError", "SchematicGenerationResult", "SchematicGenerator", "ServiceError",
    "ServicesConfig", "StreamingTextGenerator", "TextStream", "UnknownModelError", "UnknownServiceError", "UsageInfo",
    "load_config", "local_service",
]
