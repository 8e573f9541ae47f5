"""Helpers shared by the benchmark scripts: JSON figures on stdout, progress on stderr.

Benchmarks print one JSON object per line and nothing else on stdout, so their output can be
piped into ``jq`` or appended to a results file; everything meant for a human goes to stderr.
Timings are summarised by their median because the machines they run on are shared and noisy:
one slow run should not move the quoted figure.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Timings", "emit", "log", "rate", "sig", "sqlite_bytes"]

#: Significant digits kept in printed floats: more would only print noise.
SIGNIFICANT_DIGITS = 4


def log(message: str) -> None:
    """Print progress for a human on stderr, keeping stdout for the JSON figures."""
    print(message, file=sys.stderr, flush=True)


def sig(value: float) -> float:
    """Round ``value`` to a few significant digits, for printing measured figures."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def emit(figure: Mapping[str, object]) -> None:
    """Print one figure as a single JSON line on stdout; floats are rounded with :func:`sig`."""

    def tidy(value: object) -> object:
        if isinstance(value, float):
            return sig(value)
        if isinstance(value, Mapping):
            return {str(k): tidy(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [tidy(v) for v in value]
        return value

    print(json.dumps(tidy(figure)), flush=True)


def rate(count: float, seconds: float) -> float:
    """Return ``count`` per second; 0 when nothing was timed (avoids dividing by zero)."""
    return count / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class Timings:
    """Repeated measurements of one thing, in seconds."""

    seconds: tuple[float, ...]

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timings:
        """Collect measurements; at least one is needed."""
        if not seconds:
            raise ValueError("no measurements")
        return cls(tuple(seconds))

    @property
    def median(self) -> float:
        """The median (p50): the figure to quote on a noisy machine."""
        return statistics.median(self.seconds)

    def fields(self, prefix: str = "seconds") -> dict[str, object]:
        """JSON fields: ``n``, median (p50), min, max and every run, in order."""
        return {
            "n": len(self.seconds),
            f"{prefix}_median": self.median,
            f"{prefix}_min": min(self.seconds),
            f"{prefix}_max": max(self.seconds),
            f"{prefix}_runs": list(self.seconds),
        }


def sqlite_bytes(path: Path) -> tuple[int, int]:
    """Return ``(main file bytes, -wal and -shm bytes)`` of a SQLite database on disk.

    In WAL mode committed pages can sit in the -wal file until a checkpoint, so the main file
    alone under-counts a database that is still open; missing files count as 0.
    """

    def size(file: Path) -> int:
        try:
            return file.stat().st_size
        except FileNotFoundError:
            return 0

    sidecars = sum(size(path.with_name(path.name + suffix)) for suffix in ("-wal", "-shm"))
    return size(path), sidecars
