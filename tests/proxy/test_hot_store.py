"""HotAnswers: bounded by bytes, least recently used dropped first, TTL honoured."""

from __future__ import annotations

import base64
import math

from hypothesis import given
from hypothesis import strategies as st

from proxy.hot import MAX_BODY, HotAnswer, HotAnswers
from proxy.memory import B64Cache, BytesLRU


def answer(tail: bytes = b',"data":[]}', expires: float = math.inf) -> HotAnswer:
    return HotAnswer(
        request_key="k" * 64,
        requested_model="m",
        model="m",
        provider="p",
        images=1,
        saved_micros=0,
        expires=expires,
        headers={},
        tail=tail,
    )


def test_the_body_changes_only_with_the_second():
    kept = answer()
    first = kept.body(1_800_000_000)
    assert first == b'{"created":1800000000,"data":[]}'
    assert kept.body(1_800_000_000) is first  # one body per second, shared
    assert kept.body(1_800_000_001) == b'{"created":1800000001,"data":[]}'


def test_expired_answers_are_dropped():
    hot = HotAnswers(1024 * 1024)
    key = ("/v1/images/generations", "", "http://h", b"{}")
    hot.put(key, answer(expires=100.0))
    assert hot.get(key, 100.0) is not None
    assert hot.get(key, 100.5) is None
    assert len(hot) == 0 and hot.bytes == 0


def test_least_recently_used_goes_first():
    one = answer(b"x" * 10_000)
    hot = HotAnswers(5 * (one.size + 1))  # room for five (each key's body is one byte)
    keys = [("/p", "", "", b"%d" % i) for i in range(6)]
    for key in keys[:5]:
        hot.put(key, answer(b"x" * 10_000))
    assert hot.get(keys[0], 0.0) is not None  # now the most recent
    hot.put(keys[5], answer(b"x" * 10_000))
    assert hot.get(keys[1], 0.0) is None
    assert all(hot.get(k, 0.0) is not None for k in (keys[0], *keys[2:]))


def test_huge_answers_and_bodies_are_not_kept():
    hot = HotAnswers(1024 * 1024)
    hot.put(("/p", "", "", b"a"), answer(b"x" * 300_000))  # over a quarter of the bound
    hot.put(("/p", "", "", b"b" * (MAX_BODY + 1)), answer())
    assert len(hot) == 0
    assert not HotAnswers(0).enabled


@given(
    st.lists(st.tuples(st.integers(0, 20), st.integers(0, 40_000), st.booleans()), max_size=60),
    st.integers(0, 200_000),
)
def test_the_bound_always_holds_and_the_count_is_exact(operations, bound):
    hot = HotAnswers(bound)
    for name, size, is_put in operations:
        key = ("/p", "", "", b"%d" % name)
        if is_put:
            hot.put(key, answer(b"x" * size))
        else:
            hot.get(key, 0.0)
        assert hot.bytes <= bound
        kept = [(k, hot.get(k, 0.0)) for k in hot.oldest_first()]
        assert hot.bytes == sum(a.size + len(k[3]) for k, a in kept if a is not None)


@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 5_000)), max_size=60))
def test_bytes_lru_stays_within_its_bound(puts):
    kept = BytesLRU(12_000)
    for name, size in puts:
        kept.put(str(name), b"x" * size)
        assert kept.bytes <= 12_000
        assert kept.bytes == sum(len(kept.get(k) or b"") for k in kept.oldest_first())
    assert kept.get("absent") is None


def test_base64_is_encoded_once_per_blob():
    b64 = B64Cache(1024 * 1024)
    first = b64.encode("a" * 64, b"\x89PNG...")
    assert first == base64.b64encode(b"\x89PNG...")
    assert b64.encode("a" * 64, b"ignored: the sha names it") is first
