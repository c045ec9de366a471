"""Helpers shared by B's state tests: an injectable clock and "the nfsstat4 this call raised"."""

from __future__ import annotations

import pytest

from acmenfs.nfs4.errors import Nfs4Error


class Clock:
    """A clock the test moves by hand (``clock.now += 91``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def status(call, *args, **kwargs):
    """The status of the Nfs4Error ``call(*args, **kwargs)`` must raise."""
    with pytest.raises(Nfs4Error) as info:
        call(*args, **kwargs)
    return info.value.status
