"""Our NLP services as a Parlant ``NLPService`` (``parlant.core.nlp``), so a Parlant agent runs on our engine.

::

    import parlant.sdk as p
    from inference_pio.integrations.parlant import ParlantNLPService
    from inference_pio.services import NLPServiceFactory

    factory = NLPServiceFactory(logger)
    await factory.initialize()
    service = await factory.create_default_service()          # or a LlamaService, a ModelSwitcher, ...
    async with p.Server(nlp_service=lambda container: ParlantNLPService(service)) as server:
        ...

Supports parlant 3.2-3.3.x (``version.py`` says why; another version is an ImportError naming it).
Streaming text generation is offered when the wrapped service streams (local models do; the remote
service and the switcher do not, and say so through ``supports_streaming``).
"""

from .version import SUPPORTED_TEXT, check_parlant_version

check_parlant_version()

from .adapters import ParlantEmbedderAdapter, ParlantSchematicGeneratorAdapter  # noqa: E402
from .service import ParlantNLPService  # noqa: E402

__all__ = ["ParlantEmbedderAdapter", "ParlantNLPService", "ParlantSchematicGeneratorAdapter", "SUPPORTED_TEXT",
           "check_parlant_version"]
