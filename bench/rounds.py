"""Round order for benchmarks that compare servers (or protocol versions) in alternating runs.

Owns the rotation the comparing benchmarks share (bench_nfs, bench_nfs4, bench_vmio): in every
round each contender runs once, the order rotates by one place from round to round, and a
number of rounds rounded up to a multiple of the number of contenders gives each contender each
place equally often, so an advantage of a place (first run after a sync, a warm cache) cancels.
"""

from __future__ import annotations

from typing import Iterable, TypeVar

T = TypeVar("T")


def rotated(contenders: Iterable[T], round_index: int) -> list[T]:
    """The running order of round ``round_index``: ``contenders`` (in their given order, e.g. a
    dict's keys) rotated left by that many places."""
    order = list(contenders)
    shift = round_index % len(order)
    return order[shift:] + order[:shift]


def whole_rotations(rounds: int, contenders: int) -> int:
    """``rounds`` rounded up to a multiple of ``contenders`` (each then takes each place equally often)."""
    return -(-rounds // contenders) * contenders
