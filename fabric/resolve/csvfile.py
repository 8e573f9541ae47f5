"""Resolution on its own, over one CSV file: `fabric resolve INPUT.csv --rules MATCH.yaml`.

So data teams can tune match rules on their own extracts before wiring a source into a
project: every row is a record identified by one column, fields read the columns their rules
name (the table is called ``input``, or the CSV's own columns of the fields' names), and the
output maps each record to a cluster id, with an optional file of the links that explain it.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

from fabric.errors import RuleError, SourceError
from fabric.files import open_private
from fabric.resolve.clusters import mint_entity_id
from fabric.resolve.engine import Resolution, resolve_records
from fabric.resolve.rules import load_match_rules

__all__ = ["INPUT_TABLE", "ResolveCsvReport", "resolve_csv"]

#: The table name a match file uses for the rows of the input CSV.
INPUT_TABLE = "input"


@dataclass(frozen=True)
class ResolveCsvReport:
    """What `fabric resolve` did."""

    records: int
    clusters: int
    links: int
    refused: int
    pairs_compared: int
    seconds: float


def _read(path: Path, id_column: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror})") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        if id_column not in header:
            raise SourceError(
                f"{path}: no column '{id_column}' to identify records "
                f"(columns: {', '.join(header) or 'none'}; use --id-column)"
            )
        rows: list[dict[str, str]] = []
        seen: set[str] = set()
        try:
            for row in reader:
                record_id = (row.get(id_column) or "").strip()
                if not record_id:
                    raise SourceError(f"{path}:{reader.line_num}: empty '{id_column}'")
                if record_id in seen:
                    raise SourceError(
                        f"{path}:{reader.line_num}: '{id_column}' repeats an "
                        "earlier record's id; ids must be unique"
                    )
                seen.add(record_id)
                rows.append(row)
        except csv.Error as exc:
            raise SourceError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from exc
    return header, rows


def _write_clusters(path: Path, resolution: Resolution[str], entity_type: str) -> dict[str, str]:
    taken: set[str] = set()
    cluster_of: dict[str, str] = {}
    for members in resolution.clusters:
        cluster_id = mint_entity_id(entity_type, members[0], taken)
        taken.add(cluster_id)
        for record in members:
            cluster_of[record] = cluster_id
    # Owner-only: a record id may be personal (an email as a source's key).
    with open_private(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_id", "entity_id"])
        writer.writerows(sorted(cluster_of.items()))
    return cluster_of


def _write_explanations(
    path: Path, resolution: Resolution[str], cluster_of: dict[str, str]
) -> None:
    with open_private(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["record_a", "record_b", "entity_id", "rule", "status", "score", "comparisons"]
        )
        for link in resolution.links:
            writer.writerow(
                [
                    link.a,
                    link.b,
                    cluster_of[link.a],
                    link.rule,
                    "linked",
                    "" if link.score is None else link.score,
                    json.dumps(dict(link.comparisons), sort_keys=True),
                ]
            )
        for link in resolution.refused:
            writer.writerow(
                [
                    link.a,
                    link.b,
                    "",
                    link.rule,
                    f"refused: {link.refused}",
                    "" if link.score is None else link.score,
                    json.dumps(dict(link.comparisons), sort_keys=True),
                ]
            )


def resolve_csv(
    input_path: Path,
    rules_path: Path,
    out: Path,
    *,
    explain: Path | None = None,
    id_column: str = "record_id",
    entity_type: str | None = None,
) -> ResolveCsvReport:
    """Resolve the rows of one CSV into clusters and write ``record_id,entity_id``.

    Raises:
        RuleError: the match rules are invalid or name columns the CSV lacks.
        SourceError: the CSV cannot be read, lacks the id column or repeats an id.
    """
    started = time.perf_counter()
    header, rows = _read(input_path, id_column)
    compiled = load_match_rules(rules_path, entity_type)
    listed = {t for mapping in compiled.sources.values() for t in mapping}
    if listed and INPUT_TABLE not in listed:
        raise RuleError(
            f"{rules_path}: fields name columns of tables "
            f"{', '.join(sorted(listed))}; for a CSV, name them under "
            f"'{INPUT_TABLE}' (or leave out `columns` to use the field names)"
        )
    extract = compiled.extractor(INPUT_TABLE, set(header))
    if extract is None:
        raise RuleError(
            f"{rules_path}: no match field is a column of {input_path} "
            f"(columns: {', '.join(header)})"
        )
    records = [(row[id_column].strip(), extract(row)) for row in rows]
    resolution = resolve_records(records, compiled)
    # Missing directories are made owner-only (0700) as the files are written.
    cluster_of = _write_clusters(out, resolution, compiled.entity_type)
    if explain is not None:
        _write_explanations(explain, resolution, cluster_of)
    return ResolveCsvReport(
        records=len(records),
        clusters=len(resolution.clusters),
        links=len(resolution.links),
        refused=len(resolution.refused),
        pairs_compared=resolution.stats.get("pairs_compared", 0),
        seconds=time.perf_counter() - started,
    )
