"""ByteLRU: bounded by the sizes of what it keeps, least recently used dropped first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.lru import ByteLRU


def _length(_key: str, value: bytes) -> int:
    return len(value)


def test_the_least_recently_used_goes_first_and_a_get_refreshes() -> None:
    lru: ByteLRU[str, bytes] = ByteLRU(30, sizeof=_length, max_item=10)
    for key in "abc":
        assert lru.put(key, b"x" * 10)
    assert lru.get("a") == b"x" * 10  # now the most recent
    assert lru.put("d", b"y" * 10)
    assert lru.oldest_first() == ["c", "a", "d"]
    assert "b" not in lru and lru.get("b") is None
    assert (len(lru), lru.bytes) == (3, 30)


def test_an_item_over_the_item_bound_is_refused_and_changes_nothing() -> None:
    lru: ByteLRU[str, bytes] = ByteLRU(100, sizeof=_length)  # items of at most 25
    lru.put("a", b"x" * 25)
    assert not lru.put("b", b"x" * 26)
    assert lru.oldest_first() == ["a"] and lru.bytes == 25
    assert not ByteLRU(0, sizeof=_length).put("a", b"x")  # a zero bound keeps nothing sized


def test_put_replaces_and_pop_forgets() -> None:
    lru: ByteLRU[str, bytes] = ByteLRU(100, sizeof=_length)
    lru.put("a", b"x" * 20)
    lru.put("a", b"y" * 5)
    assert (lru.get("a"), lru.bytes) == (b"y" * 5, 5)
    assert lru.pop("a") == b"y" * 5 and lru.pop("a") is None
    assert (len(lru), lru.bytes) == (0, 0)


_OPS = st.lists(
    st.tuples(st.sampled_from(["put", "get", "pop"]), st.integers(0, 9), st.integers(0, 60)),
    max_size=80,
)


@given(_OPS, st.integers(0, 200), st.integers(0, 80))
def test_it_behaves_like_a_list_ordered_by_use(
    ops: list[tuple[str, int, int]], bound: int, item: int
) -> None:
    """Against a plain model: the same keys in the same order, the bytes never over the
    bound, and an item that fits is always kept as the most recent."""
    lru: ByteLRU[int, bytes] = ByteLRU(bound, sizeof=lambda _k, v: len(v), max_item=item)
    model: list[tuple[int, bytes]] = []  # oldest first
    for op, key, size in ops:
        found = next((v for k, v in model if k == key), None)
        if op == "get":
            assert lru.get(key) == found
            if found is not None:
                model = [(k, v) for k, v in model if k != key] + [(key, found)]
        elif op == "pop":
            assert lru.pop(key) == found
            model = [(k, v) for k, v in model if k != key]
        else:
            value = bytes([key]) * size
            kept = lru.put(key, value)
            assert kept == (size <= min(bound, item))
            if kept:
                model = [(k, v) for k, v in model if k != key] + [(key, value)]
                while sum(len(v) for _, v in model) > bound:
                    model.pop(0)
                assert lru.oldest_first()[-1] == key  # the most recent is kept
        assert lru.oldest_first() == [k for k, _ in model]
        assert lru.bytes == sum(len(v) for _, v in model) <= bound
