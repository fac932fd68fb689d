"""``pio serve [MODEL]``: the OpenAI-compatible server, bound to 127.0.0.1 by default."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from . import _options as opt
from ._console import err_console
from ._models import open_model, resolve_model_path


def register(app: typer.Typer) -> None:
    @app.command(help="Serve MODEL (default: SmolLM2-135M-Instruct) over an OpenAI-compatible HTTP API.")
    def serve(
        model_spec: str = typer.Argument(None, metavar="[MODEL]", show_default=False),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 exposes it to the network)."),
        port: int = typer.Option(8000, "--port", min=0, max=65535),
        name: str = typer.Option(None, "--name", help="Model name clients send (default: the file's stem, the "
                                                      "catalogue name, or MODEL; a path given as MODEL works too)."),
        embedding_model: str = typer.Option(None, "--embedding-model",
                                            help="Checkpoint serving /v1/embeddings (a sentence-embedding model)."),
        embedding_name: str = typer.Option(None, "--embedding-name",
                                           help="Embedding model name clients send (default: its folder's name)."),
        api_key: str = typer.Option(None, "--api-key", envvar="PIO_API_KEY",
                                    help="Require 'Authorization: Bearer KEY' (or set PIO_API_KEY)."),
        max_batch_size: int = typer.Option(32, "--max-batch-size", min=1, help="Most requests decoded together."),
        max_request_bytes: int = typer.Option(8 * 2**20, "--max-request-bytes", min=1,
                                              help="Largest request body accepted (bigger ones get a 413)."),
        prefix_caching: bool = typer.Option(True, "--prefix-caching/--no-prefix-caching",
                                            help="Reuse the KV cache of prompt prefixes earlier requests computed."),
        replicas: int = typer.Option(0, "--replicas", min=0,
                                     help="Run N engine replicas on Ray Serve behind this one endpoint, routed by "
                                          "prompt prefix (needs the distributed extra)."),
        ray_address: str = typer.Option(None, "--ray-address",
                                        help="Run the replicas on this Ray cluster (HOST:PORT of `ray start --head`) "
                                             "instead of a local Ray instance; --replicas defaults to 1."),
        tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", min=1,
                                                 help="Split the model over N local processes (torchrun, gloo on "
                                                      "CPU / NCCL on GPU); Llama-family safetensors checkpoints."),
        dtype: str = opt.Dtype,
        max_seq_len: int = opt.MaxSeqLen,
        log_level: str = typer.Option("info", "--log-level"),
    ) -> int:
        from ..extras import require

        require("serve", "pio serve")  # fastapi, uvicorn, prometheus_client: a message naming the extra
        import uvicorn

        from ..server import ServedModel, ServerState, create_app

        path = resolve_model_path(model_spec)
        load_options = dict(max_batch_size=max_batch_size, enable_prefix_caching=prefix_caching,
                            **opt.load_options(dtype, max_seq_len))
        served_name, aliases = served_names(name, model_spec, path)
        if tensor_parallel_size > 1:
            from ..distributed.tp_serve import launch, serve_argv

            return launch(tensor_parallel_size, serve_argv(
                path, served_name, host, port, api_key, dtype, max_seq_len, max_batch_size, max_request_bytes,
                prefix_caching, log_level, embedding_model=embedding_model, replicas=replicas or ray_address))
        if replicas or ray_address:
            from ..distributed import serve_replicas
            from ..distributed.spec import ReplicaSpec

            emb_name = embedding_model and (embedding_name or os.path.basename(os.path.normpath(embedding_model)))
            spec = ReplicaSpec(str(path), served_name, load_options, aliases, embedding_model, emb_name, api_key,
                               max_request_bytes)
            err_console.print(f"serving [bold]{served_name}[/] on http://{host}:{port}/v1 "
                              f"with {replicas or 1} replicas on Ray", highlight=False)
            serve_replicas(spec, replicas or 1, host, port, ray_address, log_level, max_inflight=max_batch_size)
            return 0
        model = open_model(str(path), **load_options)
        generator = ServedModel(served_name, model, model.async_engine(), aliases=aliases)
        embedder = None
        if embedding_model:
            emb = open_model(embedding_model)
            embedder = ServedModel(embedding_name or os.path.basename(os.path.normpath(embedding_model)), emb)
        app = create_app(ServerState(generator, embedder, api_key), max_request_bytes=max_request_bytes)
        err_console.print(f"serving [bold]{generator.name}[/] on http://{host}:{port}/v1", highlight=False)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return 0


def served_names(name: str | None, spec: str | None, path: Path) -> tuple[str, tuple[str, ...]]:
    """The model's name for clients and the other names it answers to.

    ``--name`` wins. A file or folder given as MODEL is named by its stem (``SmolLM2-135M-Instruct.Q4_1``
    for ``.../SmolLM2-135M-Instruct.Q4_1.gguf``; a folder by its name), and the path as typed also works;
    a catalogue name or id is its own name; no MODEL names the default model by its file.
    """
    stem = path.stem if path.is_file() else path.name
    if name:
        return name, ()
    if spec in (None, "", "default"):
        return stem, ()
    if Path(spec).expanduser().exists():
        return stem, tuple(dict.fromkeys(a for a in (spec, str(path)) if a != stem))
    return spec, ()
