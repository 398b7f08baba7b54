"""Sliding windows of accepted transcripts per source, for the real-data floor (echogate.policy).

Each source keeps 60 time buckets spanning its window, each with the number of accepted
transcripts and the sum of their bot-origin probabilities (the expected number written by a
machine). The share is sum / count over the buckets still inside the window. State is
rebuilt from the store at start-up (accepted records of the last window), so a restart
neither forgets the window nor counts anything twice.
"""
from __future__ import annotations

import threading
import time
from collections import deque

BUCKETS = 60


class _Window:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.width = seconds / BUCKETS
        self.buckets: deque[list] = deque()  # [bucket index, count, machine mass], oldest first
        self.count = 0
        self.mass = 0.0

    def _expire(self, now: float) -> None:
        oldest = int(now // self.width) - BUCKETS + 1
        while self.buckets and self.buckets[0][0] < oldest:
            _, count, mass = self.buckets.popleft()
            self.count -= count
            self.mass -= mass

    def add(self, p: float, count: int, at: float) -> None:
        index = int(at // self.width)
        if self.buckets and self.buckets[-1][0] == index:
            bucket = self.buckets[-1]
        else:
            bucket = next((b for b in self.buckets if b[0] == index), None)
            if bucket is None:
                bucket = [index, 0, 0.0]
                self.buckets.append(bucket)
                self.buckets = deque(sorted(self.buckets))
        bucket[1] += count
        bucket[2] += p
        self.count += count
        self.mass += p


class SyntheticBudgetWindows:
    """Thread-safe: the event loop decides, the store's loader fills it at start."""

    def __init__(self, clock=time.time, on_share=None):
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._on_share = on_share or (lambda source, share: None)

    def _window(self, source: str, seconds: float) -> _Window:
        w = self._windows.get(source)
        if w is None or w.seconds != seconds:  # a reload may change the window: start it afresh
            w = self._windows[source] = _Window(seconds)
        w._expire(self._clock())
        return w

    def share(self, source: str, seconds: float) -> float:
        with self._lock:
            w = self._window(source, seconds)
            return w.mass / w.count if w.count else 0.0

    def share_if_accepted(self, source: str, p: float, seconds: float) -> float:
        """The share the window would have with one more accepted transcript of probability p."""
        with self._lock:
            w = self._window(source, seconds)
            return (w.mass + p) / (w.count + 1)

    def add(self, source: str, p: float, seconds: float, count: int = 1, at: float | None = None) -> None:
        """Count accepted transcripts (count -1 with the same p takes one back)."""
        with self._lock:
            w = self._window(source, seconds)
            w.add(p, count, self._clock() if at is None else at)
            share = w.mass / w.count if w.count else 0.0
        self._on_share(source, share)

    def load(self, rows, seconds_for) -> None:
        """Fill from the store: rows of (source, epoch seconds, count, mass) of accepted records;
        `seconds_for(source)` is the source's window (None: no budget, skipped)."""
        for source, at, count, mass in rows:
            seconds = seconds_for(source)
            if seconds is not None and at >= self._clock() - seconds:
                self.add(source, mass, seconds, count=count, at=at)
