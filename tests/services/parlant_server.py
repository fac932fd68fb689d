"""A real Parlant server on our service, run as its own process by ``test_parlant_server.py``.

``python -m tests.services.parlant_server PORT TOOL_PORT {local,switcher} [no-prefix-caching]``: starts
``parlant.sdk.Server`` with ``ParlantNLPService`` over a ``LlamaService`` (or a ``ModelSwitcher``) on the
default SmolLM2 model, creates one agent with one guideline, prints ``AGENT <agent id>`` and serves until killed. Its own process
because parlant fixes its home folder (``PARLANT_HOME``) when first imported.

Kept cheap, as a turn on a 2-core machine runs every Parlant prompt through a 135M model: one engine
iteration, no preamble, a short guideline, a 160-token output cap (parlant never sends ``max_tokens``).
Each generation call prints a ``GENERATION`` line and each failure a ``GENERATION FAILED`` line: the test
counts them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile

import parlant.sdk as p

from inference_pio.defaults import default_model_path
from inference_pio.integrations.parlant import ParlantNLPService
from inference_pio.models import LocalModelManager, ModelType
from inference_pio.services import LlamaService, ModelSwitcher

MAX_TOKENS = 160


def counting(service):
    """Wraps ``get_schematic_generator`` so each generation and each failure is printed (the test reads them)."""
    original = service.get_schematic_generator

    async def get_schematic_generator(schema, hints=None):
        generator = await original(schema, hints)
        generate = generator.generate

        async def counted(prompt, hints=None):
            try:
                result = await generate(prompt, hints)
            except Exception as e:
                print(f"GENERATION FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
                raise
            print(f"GENERATION {result.info.schema_name} in={result.info.usage.input_tokens} "
                  f"out={result.info.usage.output_tokens} {result.info.duration:.1f}s", flush=True)
            return result

        generator.generate = counted
        return generator

    service.get_schematic_generator = get_schematic_generator
    return service


async def main(port: int, tool_port: int, kind: str, prefix_caching: bool = True) -> None:
    logger = logging.getLogger("parlant-test")
    manager = LocalModelManager(home=tempfile.mkdtemp(prefix="pio_home_"), progress=False)
    await manager.initialize()
    info = await manager.import_path(default_model_path(), ModelType.LLAMA, name="smollm2")
    options = {"max_tokens": MAX_TOKENS, "enable_prefix_caching": prefix_caching}
    if kind == "local":
        service = LlamaService(model_manager=manager, model_id=info.id, logger=logger, **options)
    else:
        # No per-call timeout: on a loaded 2-core machine one ~3k-token Parlant call can pass the default 120 s,
        # and with no fallback to go to that only fails the turn (the test bounds the turn itself).
        service = ModelSwitcher(logger, manager, default_model_id=info.id, local_options=options, timeout=None)
        await service.initialize()
    counting(service)
    async with p.Server(host="127.0.0.1", port=port, tool_service_port=tool_port, log_level=p.LogLevel.WARNING,
                        nlp_service=lambda container: ParlantNLPService(service)) as server:
        agent = await server.create_agent(name="Geo", description="Answers geography questions in one sentence.",
                                          max_engine_iterations=1,
                                          perceived_performance_policy=p.NullPerceivedPerformancePolicy())
        await agent.create_guideline(condition="the customer asks about a capital city",
                                     action="name the capital city")
        print(f"AGENT {agent.id}", flush=True)
    # Leaving the block is where parlant evaluates the guideline and serves (until the process is killed).


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:] != ["no-prefix-caching"]))
