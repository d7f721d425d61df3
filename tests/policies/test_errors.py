"""The error tree: each class's status and code, and what MethodNotAllowed carries."""

from policies.errors import Conflict, InvalidRequest, MethodNotAllowed, RequestTimeout


def test_method_not_allowed_is_a_405_that_carries_the_allowed_methods_sorted() -> None:
    error = MethodNotAllowed("Use GET.", allowed={"HEAD", "GET"})
    assert isinstance(error, InvalidRequest)
    assert (error.status_hint, error.allowed) == (405, ("GET", "HEAD"))
    assert error.envelope()["error"]["code"] == "method_not_allowed"


def test_request_timeout_and_conflict_have_their_own_statuses_and_codes() -> None:
    timeout, conflict = RequestTimeout("Too slow."), Conflict("Exists.", code="experiment_exists")
    assert (timeout.status_hint, timeout.code, timeout.openai_type) == (
        408,
        "request_timeout",
        "invalid_request_error",
    )
    assert (conflict.status_hint, conflict.code) == (409, "experiment_exists")
