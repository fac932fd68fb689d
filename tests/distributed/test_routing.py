"""Prefix-aware replica choice: same prefix -> same replica, least-loaded fallback, forgetting a dead replica."""

from __future__ import annotations

import json

import pytest

from inference_pio.distributed.routing import (NO_PREFIX, PREFIX, ROUND_ROBIN, SATURATED, PrefixRouter,
                                               prefix_hashes, routing_text)

SYSTEM = "You are a careful assistant who answers in one short paragraph. " * 3


def chat(*contents: str) -> bytes:
    roles = ["system"] + ["user", "assistant"] * len(contents)
    return json.dumps({"model": "m", "messages": [{"role": r, "content": c} for r, c in zip(roles, contents)]}).encode()


def test_prefix_hashes_chain_whole_blocks_only():
    a, b = prefix_hashes("x" * 130, block_chars=64), prefix_hashes("x" * 128 + "yz", block_chars=64)
    assert len(a) == 2 and a == b  # the partial third block is not hashed
    c = prefix_hashes("y" + "x" * 129, block_chars=64)
    assert c[0] != a[0] and c[1] != a[1]  # a change in block 0 changes every later hash
    assert len(prefix_hashes("x" * 10_000, block_chars=64, max_blocks=8)) == 8


def test_routing_text_renders_chat_and_completion_prompts():
    assert routing_text("/v1/chat/completions", chat(SYSTEM, "hi")).startswith(f"<system>{SYSTEM}\n<user>hi")
    content = [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]
    parts = {"messages": [{"role": "user", "content": content}]}
    assert routing_text("/v1/chat/completions", json.dumps(parts).encode()) == "<user>ab\n"
    assert routing_text("/v1/completions", b'{"prompt": "abc"}') == "abc"
    assert routing_text("/v1/completions", b'{"prompt": [1, 22]}') == "1,22,"
    for body in (b"not json", b"[1]", b'{"prompt": 3}', b""):
        assert routing_text("/v1/completions", body) == ""
    assert routing_text("/v1/models", b"") == ""


def test_turns_of_one_conversation_stay_on_its_replica():
    router = PrefixRouter(3, block_chars=32)
    first, reason = router.choose(routing_text("/v1/chat/completions", chat(SYSTEM + "conversation A", "q1")))
    assert reason == NO_PREFIX
    router.release(first)
    for turn in range(4):  # later turns extend the same prompt
        later = [t for i in range(turn + 1) for t in (f"answer {i}", f"question {i}")]
        contents = [SYSTEM + "conversation A", "q1"] + later
        replica, reason = router.choose(routing_text("/v1/chat/completions", chat(*contents)))
        assert (replica, reason) == (first, PREFIX)
        router.release(replica)


def test_new_prefixes_spread_over_idle_replicas():
    router = PrefixRouter(2, block_chars=16)
    chosen = []
    for i in range(4):
        replica, reason = router.choose(f"{i} a prompt that nobody sent before")
        assert reason == NO_PREFIX
        router.release(replica)
        chosen.append(replica)
    assert sorted(set(chosen)) == [0, 1]


def test_saturated_replica_falls_back_to_the_least_loaded():
    router = PrefixRouter(2, block_chars=16, max_inflight=3, imbalance=100)
    text = "the shared prefix of many requests " * 4
    home, _ = router.choose(text)
    assert router.choose(text) == (home, PREFIX)
    assert router.choose(text) == (home, PREFIX)
    assert router.inflight[home] == 3
    assert router.choose(text) == (1 - home, SATURATED)  # home holds max_inflight requests
    router.release(home)
    router.release(1 - home)
    # The prefix moved with the fallback; the imbalance rule moves it back once the new home is busier.
    tight = PrefixRouter(2, block_chars=16, imbalance=1)
    home, _ = tight.choose(text)
    assert tight.choose(text) == (home, PREFIX)      # 1 vs 0 in flight: within the imbalance
    assert tight.choose(text) == (1 - home, SATURATED)  # 2 vs 0: more than 1 over the least loaded


def test_forget_drops_a_replaced_replicas_prefixes():
    router = PrefixRouter(2, block_chars=16)
    text = "a conversation long enough for blocks"
    home, _ = router.choose(text)
    router.release(home)
    router.forget(home)
    assert router.choose(text)[1] == NO_PREFIX


def test_round_robin_ignores_prefixes_and_table_is_bounded():
    rr = PrefixRouter(3, policy=ROUND_ROBIN)
    assert [rr.choose("same text")[0] for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    assert rr.inflight == [2, 2, 2]
    small = PrefixRouter(2, block_chars=4, table_size=10)
    small.choose("x" * 400)
    assert len(small._owner) == 10
    with pytest.raises(ValueError, match="round_robin"):
        PrefixRouter(2, policy="random")
    with pytest.raises(ValueError, match="at least 1"):
        PrefixRouter(0)
