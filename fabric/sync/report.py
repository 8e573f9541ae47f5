"""What a sync run reports, and the one way keys are turned into text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProgressCallback", "SyncReport", "key_text"]

#: ``progress(stage, advance, total)``: called as work is done; total None when unknown.
ProgressCallback = Callable[[str, int, int | None], None]


def key_text(value: Any) -> str:
    """Render a key as text the same way whatever numeric type a driver returns (5, 5.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class SyncReport:
    """What a sync run did."""

    run_id: int
    mode: str
    seconds: float = 0.0
    rows_read: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    orphans: dict[str, int] = field(default_factory=dict)
    entities: dict[str, int] = field(default_factory=dict)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    merged: int = 0
    split: int = 0
    #: links the match rules found but refused (cannot_link, max_cluster_size): for review
    links_refused: int = 0
    #: feature vectors written to the online store, per view
    materialized: dict[str, int] = field(default_factory=dict)
    #: masked entity documents written to the online store, per policy
    documents: dict[str, int] = field(default_factory=dict)
    #: of ``seconds``, those spent bringing the online store up to date after the run
    materialize_seconds: float = 0.0
    #: where the run's tasks ran: "inline", "local: 2 workers", "dask: 2 workers"
    executor: str = "inline"

    def counts(self) -> dict[str, int]:
        """Counters as recorded in the catalog."""
        return {
            "rows_read": self.rows_read,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "merged": self.merged,
            "split": self.split,
        }
