"""SIGTERM and SIGINT as requests to stop at the next step boundary, with a checkpoint.

Clusters preempt jobs with SIGTERM (and a grace period); Ctrl-C sends SIGINT. Dying at once loses
every step since the last checkpoint, so the handler only records the signal; the training loop
checkpoints at the next step boundary and exits with 128 + the signal's number (143, 130). A second
signal of the same kind gets the default behaviour back: the process ends at once (last.pt is still
intact, its writes are atomic).
"""
from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                if signal.getsignal(s) is signal.SIG_IGN:
                    continue  # started with the signal ignored (nohup, a background job): keep it so
                previous = signal.signal(s, self._record)
                self._previous[s] = signal.SIG_DFL if previous is None else previous
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        return False
