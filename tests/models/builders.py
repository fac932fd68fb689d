"""Real model files for the manager's tests: tiny GGUFs (gguf.GGUFWriter), safetensors
checkpoint folders, an Ollama store and a Hugging Face hub cache laid out as the tools do."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

OLLAMA_HOST = "registry.ollama.ai"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"


def write_gguf(path: Path, arch: str = "llama", name: str = "tiny", quantized: bool = True,
               chat_template: str | None = None, rows: int = 64) -> int:
    """A small but complete GGUF: an F32 embedding, one Q4_1 (or F16) matrix of ``rows``x256, an F32
    norm. Returns its parameter count."""
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(name)
    writer.add_block_count(1)
    if chat_template:
        writer.add_chat_template(chat_template)
    embedding = rng.standard_normal((16, 32), dtype=np.float32)
    matrix = rng.standard_normal((rows, 256), dtype=np.float32)
    norm = np.ones(32, dtype=np.float32)
    writer.add_tensor("token_embd.weight", embedding)
    if quantized:
        q = quantize(matrix, gguf.GGMLQuantizationType.Q4_1)
        writer.add_tensor("blk.0.attn_q.weight", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    else:
        writer.add_tensor("blk.0.attn_q.weight", matrix.astype(np.float16))
    writer.add_tensor("output_norm.weight", norm)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return embedding.size + matrix.size + norm.size


def write_checkpoint(folder: Path, model_type: str = "llama", architectures: tuple[str, ...] = ("LlamaForCausalLM",),
                     dtype: str = "bfloat16", chat_template: bool = True, extra: dict | None = None) -> int:
    """config.json + model.safetensors (+ tokenizer_config.json); returns the parameter count."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "model.embed_tokens.weight": torch.randn(32, 16),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(16, 16),
        "model.norm.weight": torch.ones(16),
    }
    tensors = {k: v.to(getattr(torch, dtype)) for k, v in tensors.items()}
    save_file(tensors, folder / "model.safetensors")
    config = {"model_type": model_type, "architectures": list(architectures), "hidden_size": 16,
              "vocab_size": 32, **(extra or {})}
    (folder / "config.json").write_text(json.dumps(config))
    if chat_template:
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    return sum(t.numel() for t in tensors.values())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layout_ollama_model(store: Path, model: str, tag: str, weights: bytes, *, namespace: str = "library",
                        host: str = OLLAMA_HOST, weights_digest: str | None = None,
                        extra_layers: dict[str, bytes] | None = None) -> dict:
    """Write blobs and a manifest as Ollama does; ``weights_digest`` overrides the digest the manifest
    claims for the weights (the blob is stored under that name). Returns the manifest."""
    blobs = store / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    layers = []
    for media_type, data in [(MODEL_MEDIA_TYPE, weights), *(extra_layers or {}).items()]:
        digest = sha256_hex(data)
        if media_type == MODEL_MEDIA_TYPE and weights_digest:
            digest = weights_digest
        (blobs / f"sha256-{digest}").write_bytes(data)
        layers.append({"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)})
    config = b'{"model_format":"gguf"}'
    (blobs / f"sha256-{sha256_hex(config)}").write_bytes(config)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                           "digest": f"sha256:{sha256_hex(config)}", "size": len(config)},
                "layers": layers}
    write_manifest(store, model, tag, manifest, namespace=namespace, host=host)
    return manifest


def write_manifest(store: Path, model: str, tag: str, manifest: dict, *, namespace: str = "library",
                   host: str = OLLAMA_HOST) -> Path:
    path = store / "manifests" / host / namespace / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def layout_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = "a" * 40,
                     refs: bool = True) -> Path:
    """A hub cache entry as huggingface_hub writes it: blobs by hash, snapshot symlinks, refs/main.
    Returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / sha256_hex(data)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    if refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    return snapshot


def visible(folder: Path) -> list[Path]:
    """The entries of ``folder`` that are not hidden (lock files live in ``.locks``)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def initialized_manager(**kwargs):
    """A ``LocalModelManager(**kwargs)`` after ``await initialize()``."""
    import asyncio

    from inference_pio.models import LocalModelManager

    manager = LocalModelManager(**kwargs)
    asyncio.run(manager.initialize())
    return manager


def run_together(target, arg_tuples) -> None:
    """Run ``target(*args, start)`` in one forked process per tuple (fork: no re-import of torch, the
    environment inherited), all released at once by the ``start`` event; each must exit cleanly."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=target, args=(*args, start)) for args in arg_tuples]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0, f"a worker process exited with {worker.exitcode}"
