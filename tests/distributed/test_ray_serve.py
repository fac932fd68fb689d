"""Two engine replicas on a real local Ray instance, driven by the official openai client."""

from __future__ import annotations

import time

import httpx
import pytest

pytest.importorskip("ray.serve", reason="needs the distributed extra (ray[serve])")

from tests.server.chat_checkpoint import write_chat_checkpoint  # noqa: E402
from tests.server.serving import free_port  # noqa: E402

pytestmark = pytest.mark.slow

KEY = "ray-key"
SYSTEM = "You are the assistant of a long-running agent; the instructions below stay the same. " * 2


@pytest.fixture
def cluster(tmp_path_factory):
    import ray
    from ray import serve

    from inference_pio.distributed.ray_serve import build_app
    from inference_pio.distributed.spec import ReplicaSpec

    spec = ReplicaSpec(str(write_chat_checkpoint(tmp_path_factory.mktemp("ray"), 1024)), "tiny",
                       {"dtype": "float32", "max_seq_len": 1024, "max_batch_size": 4}, api_key=KEY,
                       max_request_bytes=4096)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(spec, replicas=2, cpus_per_replica=1), name="pio-test", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture
def client(cluster):
    from openai import OpenAI

    return OpenAI(base_url=f"{cluster}/v1", api_key=KEY, max_retries=0, timeout=120)


def messages(conversation: str, *turns: str) -> list[dict]:
    system = {"role": "system", "content": f"{conversation}: {SYSTEM}"}
    return [system] + [{"role": "user", "content": t} for t in turns]


def ask(client, conversation: str, *turns: str, **options):
    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=messages(conversation, *turns),
                                                           max_tokens=4, temperature=0, **options)
    return int(raw.headers["x-pio-replica"]), raw.parse()


def test_replicas_route_by_prefix_serve_the_api_and_survive_a_kill(cluster, client):
    # One test, so that a parallel run (xdist) starts one Ray instance, not one per worker.
    check_routing_and_api(cluster, client)
    check_a_killed_replica_is_replaced(client)


def check_routing_and_api(cluster, client):
    homes = {}
    for conversation in ("alpha", "beta", "gamma", "delta"):
        homes[conversation], first = ask(client, conversation, "first question")
        assert first.choices[0].finish_reason in ("length", "stop")
        for turn in range(2):  # the conversation grows; its prefix stays
            replica, _ = ask(client, conversation, "first question", f"and then {turn}")
            assert replica == homes[conversation]
    assert set(homes.values()) == {0, 1}  # new conversations spread over both replicas
    # Streaming, errors and auth are those of ``pio serve`` (the same app runs in each replica).
    whole = ask(client, "alpha", "stream me")[1].choices[0].message.content
    chunks = client.chat.completions.create(model="tiny", messages=messages("alpha", "stream me"), max_tokens=4,
                                            temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    from openai import AuthenticationError, NotFoundError

    with pytest.raises(NotFoundError, match="nope"):
        client.completions.create(model="nope", prompt="x", max_tokens=1)
    with pytest.raises(AuthenticationError):
        client.with_options(api_key="wrong").models.list()
    big = httpx.post(f"{cluster}/v1/completions", content=b'{"prompt": "' + b"x" * 5000 + b'"}',
                     headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"}, timeout=30)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert "x-pio-replica" not in big.headers  # refused by the ingress, before any replica
    metrics = httpx.get(f"{cluster}/metrics", timeout=30).text
    assert 'pio_prompt_tokens_total{replica="0"}' in metrics and 'pio_prompt_tokens_total{replica="1"}' in metrics
    assert 'pio_routed_requests_total{reason="prefix",replica=' in metrics


def check_a_killed_replica_is_replaced(client):
    import ray
    from openai import APIError

    home, _ = ask(client, "epsilon", "hello")
    [name] = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if f"#engine-{home}#" in a["name"]]
    # A long answer streaming from the replica when it dies ends with an error naming it, not a hang.
    stream = client.chat.completions.create(model="tiny", messages=messages("epsilon", "hello"), max_tokens=800,
                                            temperature=0, stream=True, extra_body={"ignore_eos": True})
    next(iter(stream))
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    with pytest.raises(APIError, match=f"replica {home} died"):
        for _ in stream:
            pass
    try:  # until Ray has replaced it, a request fails fast with a clear 503 or goes to the other replica
        assert ask(client, "epsilon", "hello again")[1].choices
    except APIError as e:
        assert getattr(e, "status_code", None) == 503 and f"replica {home}" in str(e), e
    deadline = time.monotonic() + 120
    while not (names := [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                         if f"#engine-{home}#" in a["name"]]):
        if time.monotonic() > deadline:  # a bounded wait, not a speed claim
            pytest.fail("Ray did not replace the killed replica")
        time.sleep(0.5)
    assert name not in names
    # New conversations spread over both replicas again, the new one included.
    assert {ask(client, conversation, "hello")[0] for conversation in ("zeta", "eta")} == {0, 1}
