"""Driving an engine step by step with requests arriving while earlier ones run."""

from __future__ import annotations

from inference_pio.engine.generate import GenerationEngine, greedy


def run_interleaved(engine: GenerationEngine, prompts: list[list[int]], new_tokens: int, every: int,
                    max_steps: int = 2000) -> list[list[int]]:
    """Greedy outputs of ``prompts``, one submitted every ``every`` steps; raises the first request error."""
    outputs: dict[str, list[int]] = {}
    requests = []
    with engine.lock:
        for step in range(max_steps):
            if step % every == 0 and len(requests) < len(prompts):
                i = len(requests)
                r = engine.new_request(prompts[i], greedy(new_tokens, ignore_eos=True), request_id=str(i),
                                       sink=lambda out: outputs.setdefault(out.request_id, []).extend(out.token_ids))
                engine.submit(r)
                requests.append(r)
            engine.step()
            if len(requests) == len(prompts) and all(r.done for r in requests):
                break
    for r in requests:
        if r.error is not None:
            raise r.error
    assert all(r.done for r in requests), f"requests still running after {max_steps} steps"
    return [outputs[str(i)] for i in range(len(prompts))]
