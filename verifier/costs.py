"""CPU time spent on behalf of the request being served, carried in a context variable.

Admission control shares the server among callers by the server time they
use. Wall time is the wrong measure: a request that runs its two images side
by side on two threads uses twice the CPU of its wall time, and one that waits
for a slot or a lock uses none. The transport opens :func:`metering` around a
call (it measures its own thread); work handed to another thread is run
through :func:`run_metered`, which adds that thread's CPU to the same meter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

Result = TypeVar("Result")


@dataclass
class CpuMeter:
    """CPU seconds used for one request, from every thread that worked on it."""

    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds


_CURRENT: ContextVar[CpuMeter | None] = ContextVar("verifier_cpu_meter", default=None)


@contextmanager
def metering() -> Iterator[CpuMeter]:
    """Within the block, CPU used for the current request is counted on the yielded meter."""
    meter = CpuMeter()
    token = _CURRENT.set(meter)
    start = time.thread_time()
    try:
        yield meter
    finally:
        meter.add(time.thread_time() - start)
        _CURRENT.reset(token)


def run_metered(work: Callable[..., Result], *args: object) -> Result:
    """Run ``work`` in this (worker) thread, adding its CPU to the request's meter;
    submit it through ``contextvars.copy_context().run`` so the meter is found."""
    meter = _CURRENT.get()
    start = time.thread_time()
    try:
        return work(*args)
    finally:
        if meter is not None:
            meter.add(time.thread_time() - start)
