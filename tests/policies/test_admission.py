from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policies.admission import ADMITTED, Admitted, Denied, PromptPolicy, admit
from policies.errors import ContentPolicyViolation, InvalidRequest
from policies.ledger_models import KeyRecord

NONE = PromptPolicy()
POLICY = PromptPolicy.of([r"(?i)forbidden"])


def key(models: tuple[str, ...] | None) -> KeyRecord:
    return KeyRecord("web", "growth", 0.0, models=models)


def test_an_open_gateway_allows_every_model() -> None:
    assert admit(None, "gpt-image-1", "a cat", NONE) is ADMITTED


def test_a_key_without_a_list_allows_every_model() -> None:
    assert admit(key(None), "dall-e-3", "a cat", NONE) is ADMITTED


def test_a_model_off_the_list_is_denied_and_the_error_names_the_allowed_ones() -> None:
    decision = admit(key(("gpt-image-1", "auto")), "dall-e-3", "a cat", NONE)
    assert isinstance(decision, Denied)
    assert decision.reason == "model"
    assert isinstance(decision.error, InvalidRequest)
    assert decision.error.code == "model_not_allowed"
    assert decision.error.param == "model"
    assert "gpt-image-1, auto" in decision.error.message


def test_a_matching_prompt_is_denied_by_policy() -> None:
    decision = admit(None, "gpt-image-1", "a FORBIDDEN thing", POLICY)
    assert isinstance(decision, Denied)
    assert decision.reason == "prompt_policy"
    assert isinstance(decision.error, ContentPolicyViolation)


def test_no_prompt_is_not_checked() -> None:  # a variation, or a repeat the memo answers
    assert admit(None, "dall-e-2", None, POLICY) is ADMITTED


def test_the_model_list_is_checked_before_the_prompt() -> None:
    decision = admit(key(("a",)), "b", "forbidden", POLICY)
    assert isinstance(decision, Denied) and decision.reason == "model"


names = st.text(alphabet="abcdefg-", min_size=1, max_size=6)


@given(
    models=st.none() | st.lists(names, max_size=4).map(tuple),
    model=names,
    prompt=st.none() | st.text(max_size=30),
    patterns=st.lists(st.sampled_from(["a", "b+", "(?i)cat", "^x"]), max_size=3),
)
def test_admitted_exactly_when_the_list_allows_and_no_pattern_matches(
    models: tuple[str, ...] | None, model: str, prompt: str | None, patterns: list[str]
) -> None:
    policy = PromptPolicy.of(patterns)
    decision = admit(key(models), model, prompt, policy)
    allowed = models is None or model in models
    matched = bool(prompt) and any(p.search(prompt or "") for p in policy.deny)
    assert isinstance(decision, Admitted) == (allowed and not matched)
    if not allowed:
        assert isinstance(decision, Denied) and decision.reason == "model"
    elif matched:
        assert isinstance(decision, Denied) and decision.reason == "prompt_policy"
