"""How a rebuild hands sessions to its worker processes."""

from __future__ import annotations

from spanwatch.store.prepare import _handout_order


def test_long_chunks_are_handed_out_first_the_rest_in_order() -> None:
    chunks = [["a"], ["b"], ["c"], ["d"], ["e"]]
    sizes = {"a": 10, "b": 5_000, "c": 10, "d": 900, "e": 10}
    assert _handout_order(chunks, sizes) == [1, 3, 0, 2, 4]


def test_without_sizes_chunks_go_in_order() -> None:
    assert _handout_order([["a"], ["b"], ["c"]], {}) == [0, 1, 2]
