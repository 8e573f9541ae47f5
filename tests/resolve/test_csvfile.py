"""`fabric resolve` on one CSV: clusters, explanations, and clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner, Result

from fabric.cli import main

RULES = """\
person:
  fields:
    email: {normalize: [trim, lowercase]}
    first: {normalize: [trim, lowercase], columns: {input: given}}
    last: {normalize: [trim, lowercase], columns: {input: family}}
  blocking:
    - [last]
  rules:
    - name: same_email
      equal: [email]
    - name: similar_names
      score:
        fields:
          first: {metric: name, weight: 1}
          last: {metric: jaro_winkler, weight: 1}
        threshold: 1.9
"""

ROWS = [
    ("r1", "ada@x.org", "Ada", "Lovelace"),
    ("r2", "ADA@x.org ", "Ada", "King"),
    ("r3", "", "Charles", "Babbage"),
    ("r4", "", "Charlie", "Babbage"),
    ("r5", "", "Alan", "Turing"),
]


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "in.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email", "given", "family"])
        writer.writerows(ROWS)
    rules = tmp_path / "m.yaml"
    rules.write_text(RULES)
    return data, rules


def resolve(data: Path, rules: Path, out: Path, *extra: str) -> Result:
    """Run `fabric resolve` on ``data`` with ``rules``, writing ``out``."""
    command = ["resolve", str(data), "--rules", str(rules), "--out", str(out), *extra]
    return CliRunner().invoke(main, command)


def test_resolve_writes_clusters_and_explanations(tmp_path: Path) -> None:
    data, rules = write_inputs(tmp_path)
    out, explain = tmp_path / "out.csv", tmp_path / "pairs.csv"
    result = resolve(data, rules, out, "--explain", str(explain), "--id-column", "id")
    assert result.exit_code == 0, result.output
    assert "5 records -> 3 entities" in result.output
    clusters = {r["record_id"]: r["entity_id"] for r in csv.DictReader(out.open())}
    assert clusters["r1"] == clusters["r2"] and clusters["r3"] == clusters["r4"]
    assert len(set(clusters.values())) == 3
    pairs = list(csv.DictReader(explain.open()))
    by_pair = {(p["record_a"], p["record_b"]): p for p in pairs}
    assert by_pair[("r1", "r2")]["rule"] == "same_email"
    similar = by_pair[("r3", "r4")]
    assert similar["rule"] == "similar_names" and float(similar["score"]) >= 1.9
    assert json.loads(similar["comparisons"])["first"] == 1.0  # Charlie is Charles
    # Record ids may be personal (an email as a key): owner-only, nothing left beside them.
    assert out.stat().st_mode & 0o777 == 0o600 and explain.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_resolve_makes_missing_directories_owner_only(tmp_path: Path) -> None:
    data, rules = write_inputs(tmp_path)
    out, explain = tmp_path / "new" / "c.csv", tmp_path / "new2" / "sub" / "p.csv"
    result = resolve(data, rules, out, "--explain", str(explain), "--id-column", "id")
    assert result.exit_code == 0, result.output
    for made in (out.parent, explain.parent, explain.parent.parent):
        assert made.stat().st_mode & 0o777 == 0o700, made
    assert out.stat().st_mode & 0o777 == 0o600


def test_resolve_missing_id_column_is_exit_1(tmp_path: Path) -> None:
    data, rules = write_inputs(tmp_path)
    result = resolve(data, rules, tmp_path / "o.csv")
    assert result.exit_code == 1
    assert "no column 'record_id' to identify records" in result.output
    assert "--id-column" in result.output


def test_resolve_repeated_ids_name_the_line(tmp_path: Path) -> None:
    data, rules = write_inputs(tmp_path)
    with data.open("a", newline="") as handle:
        csv.writer(handle).writerow(["r1", "x@y.z", "X", "Y"])
    result = resolve(data, rules, tmp_path / "o.csv", "--id-column", "id")
    assert result.exit_code == 1 and "in.csv:7: 'id' repeats" in result.output
