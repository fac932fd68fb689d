"""``pio serve`` over tensor-parallel ranks, one process per rank, started by torchrun:

    torchrun --nproc-per-node 2 -m inference_pio.distributed.tp_serve MODEL --port 8000
    pio serve MODEL --tensor-parallel-size 2 --port 8000      # the same, torchrun started by pio

Every rank joins the group (gloo on CPU, NCCL on GPU) and loads its shards of MODEL (a safetensors
checkpoint folder or a GGUF file of the Llama family; a GGUF keeps its quantized blocks); rank 0 runs
the engine and the HTTP server, the other ranks follow its steps. A rank that dies ends the others with an error: followers fail their next collective, and
rank 0's idle heartbeat (or its next step) fails too and it exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch
import torch.distributed as dist

from .tensor_parallel import init_tensor_parallel, shutdown_tensor_parallel, tensor_parallel_model
from .tp_steps import LeaderModel, follow


class TensorParallelRank:
    """What a plugin's ``load(tensor_parallel_size=N)`` asks of this process: its rank's model and role."""

    def __init__(self, size: int):
        if not dist.is_initialized() or dist.get_world_size() != size:
            have = dist.get_world_size() if dist.is_initialized() else "no"
            raise ValueError(f"tensor_parallel_size={size} needs a torch.distributed group of {size} ranks (found "
                             f"{have}); launch with torchrun -m inference_pio.distributed.tp_serve")
        self.size, self.rank = size, dist.get_rank()
        self.leads = self.rank == 0

    def model(self, model_class, cfg, device, gguf=None):
        """This rank's shards of ``cfg.model_path`` (a safetensors folder) or of ``gguf`` (an opened GGUF
        file), in ``model_class``: the weights are loaded, the caller loads nothing more."""
        return tensor_parallel_model(model_class, cfg, self.rank, self.size, device, gguf=gguf)

    def leader(self, model) -> LeaderModel:
        return LeaderModel(model)


def launch(size: int, argv: list[str]) -> int:
    """``pio serve --tensor-parallel-size N``: torchrun's launcher, in this process, starting N local ranks."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", "--nproc-per-node", str(size), "-m", __name__, *argv])
    except SignalException:  # Ctrl-C / SIGTERM: torchrun has stopped the ranks (rank 0 stops the others)
        return 0
    except ChildFailedError as e:
        raise RuntimeError(f"a tensor-parallel rank failed: {e.get_first_failure()[1].message}") from None
    return 0


def serve_argv(path, name: str, host: str, port: int, api_key: str | None, dtype: str, max_seq_len: int | None,
               max_batch_size: int, max_request_bytes: int, prefix_caching: bool, log_level: str,
               embedding_model: str | None = None, replicas=None) -> list[str]:
    """``pio serve``'s options as this module's arguments; what TP cannot do yet is refused by name."""
    if embedding_model or replicas:
        raise ValueError("--tensor-parallel-size cannot be combined with --embedding-model, --replicas or "
                         "--ray-address yet")
    argv = [str(path), "--name", name, "--host", host, "--port", str(port), "--dtype", dtype,
            "--max-batch-size", str(max_batch_size), "--max-request-bytes", str(max_request_bytes),
            "--log-level", log_level]
    if max_seq_len:
        argv += ["--max-seq-len", str(max_seq_len)]
    if not prefix_caching:
        argv.append("--no-prefix-caching")
    if api_key:  # through the environment, not the command line other users can read
        os.environ["PIO_API_KEY"] = api_key
    return argv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="torchrun ... -m inference_pio.distributed.tp_serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="safetensors checkpoint folder or GGUF file (Llama family)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", help="model name clients send (default: the folder's name)")
    p.add_argument("--api-key", default=os.environ.get("PIO_API_KEY"))
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when there is a GPU)")
    p.add_argument("--backend", default=None, help="gloo or nccl (default: nccl for cuda, gloo for cpu)")
    p.add_argument("--max-seq-len", type=int)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--timeout", type=float, default=60, help="seconds a collective waits for a silent rank")
    p.add_argument("--log-level", default="info")
    p.add_argument("--max-request-bytes", type=int)
    p.add_argument("--no-prefix-caching", action="store_true")
    args = p.parse_args(argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    if gpu:  # one GPU per rank on each node
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    init_tensor_parallel(rank, world, "env://", args.backend or ("nccl" if gpu else "gloo"), args.timeout)
    try:
        return _run_rank(rank, world, args, gpu)
    finally:
        shutdown_tensor_parallel()


def _run_rank(rank: int, world: int, args, gpu: bool) -> int:
    from .. import load

    options = {"max_batch_size": args.max_batch_size, "tensor_parallel_size": world,
               "enable_prefix_caching": not args.no_prefix_caching}
    if args.max_seq_len:
        options["max_seq_len"] = args.max_seq_len
    device = f"cuda:{torch.cuda.current_device()}" if gpu else "cpu"
    model = load(args.model, dtype=args.dtype, device=device, **options)
    if rank != 0:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a follower ends when rank 0 stops it (or dies)
            signal.signal(sig, signal.SIG_IGN)
        steps = follow(model.plugin.model, model.plugin.kv_cache)
        print(f"rank {rank}: rank 0 stopped after {steps} steps", file=sys.stderr)
        return 0
    return _serve(model, args)


def _serve(model, args) -> int:
    import uvicorn

    from ..server import ServedModel, ServerState, create_app

    leader = model.plugin.engine.model

    def lost(error):
        print(f"error: a tensor-parallel rank is gone ({error}); exiting", file=sys.stderr, flush=True)
        os._exit(1)

    leader.start_heartbeat(args.timeout / 4, lost)
    name = args.name or os.path.basename(os.path.normpath(args.model))
    limit = {"max_request_bytes": args.max_request_bytes} if args.max_request_bytes else {}
    app = create_app(ServerState(ServedModel(name, model, model.async_engine()), None, args.api_key), **limit)
    print(f"serving {name} on http://{args.host}:{args.port}/v1 over {dist.get_world_size()} tensor-parallel ranks",
          file=sys.stderr, flush=True)
    # uvicorn re-raises the SIGTERM it caught once it has shut down: a Python handler turns it into SystemExit,
    # so the ``finally`` below still stops the followers (the default handler would end the process first).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        leader.stop()  # the app's shutdown closed the engine: no step runs any more
    return 0


if __name__ == "__main__":
    sys.exit(main())
