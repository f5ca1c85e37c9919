"""SIGTERM and SIGINT as requests to stop at the next step boundary, with a checkpoint.

Clusters preempt jobs with SIGTERM (and a grace period, often ~30 s); Ctrl-C sends SIGINT. Dying at
once loses every step since the last checkpoint, so the handler only records the signal; the
training loop checkpoints at the next step boundary and exits with 128 + the signal's number (143,
130). A second signal of the same kind gets the default behaviour back: the process ends at once
(last.pt is still intact, its writes are atomic).

A long phase inside a step boundary (a sample grid's thousands of Langevin steps, an evaluation, a
likelihood integration) iterates through `stoppable(...)`, which raises StopRequested between two of
its steps once a signal has been recorded, so the run stops within a step of the phase, not after it.
"""
from __future__ import annotations

import signal
import threading

from tqdm import tqdm

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_ACTIVE: list["StopRequests"] = []  # the StopRequests now recording, innermost last


class StopRequested(Exception):
    """A long phase was cut short by a stop request (raised by `stoppable`)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def stop_requested() -> int | None:
    """The signal an active StopRequests has recorded, or None."""
    return next((s.signum for s in reversed(_ACTIVE) if s.signum), None)


def check_stop():
    """Raise StopRequested if a stop has been requested: a long phase calls it between steps."""
    signum = stop_requested()
    if signum:
        raise StopRequested(signum)


def stoppable(iterable, desc: str | None = None, progress: bool = False, **bar):
    """`iterable` with a tqdm bar (when `progress`, shown once the phase has run 2 s), checking for
    a stop request (check_stop) before each item: what every long phase iterates over."""
    for item in tqdm(iterable, desc=desc, leave=False, disable=not progress, delay=2, **bar):
        check_stop()
        yield item


class StopRequests:
    """`with StopRequests() as stop:` ... `stop.signum` is the first signal received, or None.
    Off the main thread (where Python cannot install handlers) it records nothing."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _record(self, signum, frame):
        self.signum = self.signum or signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # a second one acts at once

    def __enter__(self):
        _ACTIVE.append(self)
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                if signal.getsignal(s) is signal.SIG_IGN:
                    continue  # started with the signal ignored (nohup, a background job): keep it so
                previous = signal.signal(s, self._record)
                self._previous[s] = signal.SIG_DFL if previous is None else previous
        return self

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        return False
