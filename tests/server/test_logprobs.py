"""logprobs through the official openai client: the numbers are log_softmax of the model's own logits."""

from __future__ import annotations

import pytest
import torch

from tests.llama.checkpoints import teacher_forced_logits
from tests.server.conftest import MODEL

MESSAGES = [{"role": "user", "content": "Count with me: one two"}]
TOP = 5


def recomputed_log_probs(local_model, prompt: list[int], output: list[int]) -> torch.Tensor:
    """``[len(output), vocab]`` log-probabilities of each output position, from the model's logits in float64."""
    logits = teacher_forced_logits(local_model.plugin, prompt + output, len(prompt))
    return logits[len(prompt) - 1:-1].double().log_softmax(dim=-1)


def test_chat_logprobs_are_the_models_log_softmax(client, local_model):
    prompt = local_model.apply_chat_template(MESSAGES)
    [expected] = local_model.generate([prompt], max_tokens=8, temperature=0, ignore_eos=True, logprobs=TOP)
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True,
                                         top_logprobs=TOP, extra_body={"ignore_eos": True})
    content = out.choices[0].logprobs.content
    assert len(content) == len(expected.token_ids) == 8
    reference = recomputed_log_probs(local_model, prompt, expected.token_ids)
    for position, (entry, token) in enumerate(zip(content, expected.token_ids)):
        assert entry.token == local_model.detokenize([token], skip_special_tokens=False)
        assert entry.bytes == list(entry.token.encode())
        assert entry.logprob == pytest.approx(reference[position, token].item(), abs=1e-4)
        best = reference[position].topk(TOP)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(best.values.tolist(), abs=1e-4)
        assert [t.token for t in entry.top_logprobs] == [local_model.detokenize([i], skip_special_tokens=False)
                                                         for i in best.indices.tolist()]
        # Greedy: the chosen token is the most likely one, and the list is sorted best first.
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        # The Python API reports the same numbers.
        local = expected.logprobs[position]
        assert (local.token_id, [t for t, _ in local.top]) == (token, best.indices.tolist())
        assert local.logprob == pytest.approx(entry.logprob, abs=1e-5)
    # The sequence's log-probability is the sum over the returned tokens.
    total = sum(e.logprob for e in content)
    assert total == pytest.approx(reference.gather(1, torch.tensor(expected.token_ids)[:, None]).sum().item(), abs=1e-3)


def test_streamed_chat_logprobs_equal_the_non_streamed(client):
    kwargs = dict(model=MODEL, messages=MESSAGES, max_tokens=10, temperature=0.8, seed=7, logprobs=True, top_logprobs=3)
    whole = client.chat.completions.create(**kwargs).choices[0].logprobs.content
    streamed = [e for chunk in client.chat.completions.create(stream=True, **kwargs)
                for c in chunk.choices if c.logprobs for e in c.logprobs.content]
    # Same tokens; the numbers agree to float32 rounding (the second request's prompt may come from the
    # prefix cache, computed in other chunks than the first's).
    assert [(e.token, e.bytes, [t.token for t in e.top_logprobs]) for e in streamed] == \
        [(e.token, e.bytes, [t.token for t in e.top_logprobs]) for e in whole]
    assert [[e.logprob] + [t.logprob for t in e.top_logprobs] for e in streamed] == \
        [pytest.approx([e.logprob] + [t.logprob for t in e.top_logprobs], abs=1e-5) for e in whole]
    assert all(len(e.top_logprobs) == 3 for e in whole)
    assert all(a.logprob >= b.logprob for e in whole for a, b in zip(e.top_logprobs, e.top_logprobs[1:]))


def test_completion_logprobs_shape_and_values(client, local_model):
    prompt = local_model.tokenize("The quick brown fox")
    [expected] = local_model.generate([prompt], max_tokens=6, temperature=0, ignore_eos=True)
    kwargs = dict(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=2, extra_body={"ignore_eos": True})
    out = client.completions.create(**kwargs).choices[0]
    lp = out.logprobs
    reference = recomputed_log_probs(local_model, prompt, expected.token_ids)
    assert lp.token_logprobs == pytest.approx(reference.gather(1, torch.tensor(expected.token_ids)[:, None])
                                              .squeeze(1).tolist(), abs=1e-4)
    # Each token's own text (a token holding part of a UTF-8 character shows U+FFFD, as in vLLM).
    assert lp.tokens == [local_model.detokenize([t], skip_special_tokens=False) for t in expected.token_ids]
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert all(len(top) <= 2 and max(top.values()) == pytest.approx(v, abs=1e-6)
               for top, v in zip(lp.top_logprobs, lp.token_logprobs))
    streamed = {"tokens": [], "token_logprobs": [], "text_offset": []}
    for chunk in client.completions.create(stream=True, **kwargs):
        for c in chunk.choices:
            for key in streamed:
                streamed[key] += getattr(c.logprobs, key) if c.logprobs else []
    assert streamed == {"tokens": lp.tokens, "token_logprobs": pytest.approx(lp.token_logprobs, abs=1e-5),
                        "text_offset": lp.text_offset}


@pytest.mark.parametrize("body, param", [
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": 2}, None),  # top_logprobs without logprobs
])
def test_bad_chat_logprobs_are_400(client, body, param):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2, extra_body=body)
    if param is not None:
        assert param in e.value.body["param"]


def test_bad_completion_logprobs_are_400(client):
    import openai

    for body in ({"logprobs": 6}, {"logprobs": 1, "echo": True}):
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model=MODEL, prompt="hi", max_tokens=2, extra_body=body)
        assert "logprobs" in e.value.body["param"]


def test_logprobs_are_taken_after_the_grammar_mask(client, local_model):
    """With a JSON grammar, the distribution is renormalised over the tokens the grammar allows: each
    chosen token is at least as likely as the raw model says, and forbidden tokens report the floor."""
    messages = [{"role": "user", "content": "JSON please"}]
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0, logprobs=True,
                                         top_logprobs=20, response_format={"type": "json_object"})
    content = out.choices[0].logprobs.content
    prompt = local_model.apply_chat_template(messages)
    tokens = [local_model.tokenize(e.token, add_special_tokens=False) for e in content]
    assert all(len(t) == 1 for t in tokens)  # each entry's text is one token of this byte-level vocabulary
    reference = recomputed_log_probs(local_model, prompt, [t[0] for t in tokens])
    raw = [reference[i, t[0]].item() for i, t in enumerate(tokens)]
    assert all(e.logprob >= r - 1e-4 for e, r in zip(content, raw))
    assert any(e.logprob > r + 1e-3 for e, r in zip(content, raw))  # the mask removed some probability mass
    assert out.choices[0].message.content.startswith("{")
    assert any(t.logprob == -9999.0 for e in content for t in e.top_logprobs)
