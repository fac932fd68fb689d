"""Stop conditions: token ids, length, and stop strings matched across token boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_pio.engine import FINISH_LENGTH, FINISH_STOP, SamplingParams, StopChecker

EOS = 2


def feed(checker: StopChecker, pieces, token_id: int = 100) -> list[str]:
    """Feeds text pieces as tokens until the checker finishes; returns what it emitted per token."""
    out = []
    for piece in pieces:
        out.append(checker.update(token_id, piece))
        if checker.finished:
            break
    return out


def test_eos_and_stop_token_ids():
    c = StopChecker(SamplingParams(max_tokens=10), eos_token_ids=[EOS, 7])
    assert c.update(5, "a") == "a" and not c.finished
    assert c.update(7, "<eot>") == ""  # the stop token's text is not returned
    assert (c.finish_reason, c.stop_reason, c.num_tokens) == (FINISH_STOP, 7, 2)
    c = StopChecker(SamplingParams(max_tokens=10, stop_token_ids=[9]), eos_token_ids=[EOS])
    c.update(9)
    assert (c.finish_reason, c.stop_reason) == (FINISH_STOP, 9)


def test_ignore_eos_still_honours_stop_token_ids_and_length():
    c = StopChecker(SamplingParams(max_tokens=3, ignore_eos=True, stop_token_ids=[9]), eos_token_ids=[EOS])
    c.update(EOS)
    c.update(EOS)
    assert not c.finished
    c.update(EOS)
    assert (c.finish_reason, c.stop_reason) == (FINISH_LENGTH, None)


def test_stops_on_token_predicts_the_token_level_finish():
    c = StopChecker(SamplingParams(max_tokens=2), eos_token_ids=[EOS])
    assert c.stops_on_token(EOS) and not c.stops_on_token(5)
    c.update(5)
    assert c.stops_on_token(5)  # the second token is the last allowed


def test_stop_string_split_across_tokens():
    c = StopChecker(SamplingParams(max_tokens=50, stop=["o w"]))
    out = feed(c, ["Hel", "lo", " ", "wor", "ld"])
    assert "".join(out) == "Hell" and out[-1] == ""
    assert (c.finish_reason, c.stop_reason) == (FINISH_STOP, "o w")
    assert out == ["Hel", "l", "", ""]  # "o" and " " held back while they could start "o w"


def test_partial_match_is_released_when_it_fails():
    c = StopChecker(SamplingParams(max_tokens=50, stop=["abc"]))
    assert feed(c, ["xa", "b", "d"]) == ["x", "", "abd"]
    assert not c.finished


def test_text_after_the_stop_in_the_same_token_is_dropped():
    c = StopChecker(SamplingParams(max_tokens=50, stop=["STOP"]))
    assert feed(c, ["foo ST", "OP bar"]) == ["foo ", ""]


def test_overlapping_prefixes_and_earliest_stop():
    c = StopChecker(SamplingParams(max_tokens=50, stop=["aab"]))
    assert "".join(feed(c, ["a", "a", "a", "b", "z"])) == "a" and c.finished
    c = StopChecker(SamplingParams(max_tokens=50, stop=["abcd", "bc"]))
    assert "".join(feed(c, ["abcd"])) == "a" and c.stop_reason == "bc"  # "bc" completes first
    c = StopChecker(SamplingParams(max_tokens=50, stop=["b", "ab"]))
    assert "".join(feed(c, ["xab"])) == "x" and c.stop_reason == "ab"  # same end: the longer one


def test_length_finish_releases_held_back_text():
    c = StopChecker(SamplingParams(max_tokens=2, stop=["xyz"]))
    assert feed(c, ["ab", "cx"]) == ["ab", "cx"]
    assert c.finish_reason == FINISH_LENGTH


def test_update_after_finish_is_an_error():
    c = StopChecker(SamplingParams(max_tokens=1))
    c.update(1, "a")
    with pytest.raises(RuntimeError, match="after the request finished"):
        c.update(1, "b")


def reference_stop(text: str, stops: list[str]) -> str | None:
    """Text before the first stop occurrence by end position (longest on ties); None if none."""
    for end in range(1, len(text) + 1):
        hits = [s for s in stops if text[:end].endswith(s)]
        if hits:
            return text[: end - len(max(hits, key=len))]
    return None


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet="abc", max_size=30),
    st.lists(st.integers(0, 30), max_size=8),
    st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=1, max_size=3),
)
def test_matches_a_full_rescan_for_any_split(text, cuts, stops):
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    c = StopChecker(SamplingParams(max_tokens=1000, stop=stops))
    out = "".join(feed(c, pieces))
    expected = reference_stop(text, stops)
    if expected is None:
        assert not c.finished
        assert text.startswith(out) and len(text) - len(out) < max(map(len, stops))  # only a partial held back
    else:
        assert c.finished and out == expected
