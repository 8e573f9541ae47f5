"""`fabric rules suggest` over a whole project: sample every entity table, suggest a policy.

The judging of one column lives in :mod:`fabric.rules.suggest`; this module reads the samples
through the project's sources and ingest transforms, as the policy will see the data.
"""

from __future__ import annotations

from typing import Any

from fabric.project import Project
from fabric.rules.suggest import ColumnFinding, render_policy, suggest_column

__all__ = ["suggest_policy"]


def suggest_policy(project: Project, rows: int = 1000, name: str = "suggested") -> str:
    """Sample up to ``rows`` rows of every entity table's source and suggest a policy.

    Raises:
        SourceError: a source cannot be read.
    """
    findings: dict[str, dict[str, list[ColumnFinding]]] = {}
    for entity_type in project.config.entities:
        tables: dict[str, list[ColumnFinding]] = {}
        for table in project.schema(entity_type).tables:
            reader = project.source(table.source)
            sample: list[tuple[Any, ...]] = []
            # Judged as stored: after the transforms at ingest, which the policy will see.
            transform = project.row_transform(entity_type, table.name)
            read = table.source_columns or table.column_names
            for batch in reader.read(table.source_table, read, batch_rows=rows):
                if transform is not None:
                    batch = [transform(row) for row in batch]
                sample.extend(batch)
                if len(sample) >= rows:
                    break
            sample = sample[:rows]
            tables[table.name] = [
                suggest_column(column, [row[at] for row in sample])
                for at, column in enumerate(table.column_names)
            ]
        findings[entity_type] = tables
    return render_policy(name, findings, rows)
