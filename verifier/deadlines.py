"""The deadline of the request being served, carried in a context variable.

The transport knows when its caller stops waiting; the core knows which stage
is about to cost time. A context variable joins the two without the core
learning anything of gRPC: the transport opens :func:`deadline_after` around a
call, and the core calls :func:`check` before each expensive stage (decode,
detect, embed, search), so that work nobody waits for any more is dropped
instead of computed. Threads do not inherit context variables: work handed to
an executor must be submitted through ``contextvars.copy_context().run``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from verifier.errors import Reason, VerifierError


@dataclass
class Deadline:
    """An absolute point on the monotonic clock; ``expired_stage`` records the
    first stage that found it passed, so the transport can count dropped work."""

    at: float
    expired_stage: str | None = None

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expire(self, stage: str) -> VerifierError:
        """Record that ``stage`` was dropped; the error to raise for it."""
        if self.expired_stage is None:
            self.expired_stage = stage
        return VerifierError(
            Reason.DEADLINE_EXCEEDED, f"the caller's deadline passed before {stage}; the work was dropped", stage=stage
        )


_CURRENT: ContextVar[Deadline | None] = ContextVar("verifier_deadline", default=None)


@contextmanager
def deadline_after(seconds: float | None) -> Iterator[Deadline | None]:
    """Within the block, the current request must be done ``seconds`` from now
    (None: no deadline, every check passes)."""
    deadline = None if seconds is None else Deadline(time.monotonic() + seconds)
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)


def current() -> Deadline | None:
    return _CURRENT.get()


def check(stage: str) -> None:
    """Raise DEADLINE_EXCEEDED if the current request's deadline has passed,
    before ``stage`` spends any time on it."""
    deadline = _CURRENT.get()
    if deadline is not None and deadline.remaining() <= 0:
        raise deadline.expire(stage)
