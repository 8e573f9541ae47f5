"""`fabric rules suggest`: personal columns found by name and by content, a policy that loads."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from fabric.cli import main
from fabric.project import Project
from fabric.rules.masking import load_masking
from fabric.rules.suggest import suggest_column


def test_columns_are_judged_by_name_and_by_content() -> None:
    assert suggest_column("email", ["a@b.co"]).kind == "email"
    assert suggest_column("contact", ["ada@example.com"] * 9 + ["n/a"]).kind == "email"
    assert suggest_column("pan", []).kind == "card"
    assert suggest_column("ref", ["4111 1111 1111 1111", "5500005555555559"]).kind == "card"
    assert suggest_column("ref", ["4111 1111 1111 1112", "1234567890123"]).kind != "card"
    assert suggest_column("acct", ["GB82 WEST 1234 5698 7654 32"]).kind == "iban"
    assert suggest_column("tel_no", []).kind == "phone"
    assert suggest_column("notes", ["call me on +1 415 555 0134 please, thanks a lot"]).kind == (
        "free_text"
    )
    assert suggest_column("status", ["paid", "failed"]).kind == "keep"
    finding = suggest_column("email", ["ada@example.com", "x"])
    assert "50% of 2 sampled values" in finding.evidence and "ada" not in finding.evidence


def test_the_suggested_policy_covers_the_demo_and_loads(demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "suggested.yaml"
    result = CliRunner().invoke(
        main, ["rules", "suggest", "-c", str(demo_dir / "fabric.yaml"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    for column, operator in (
        ("email", "{op: tokenize, domain: email}"),
        ("card_number", "{op: fpe, alphabet: digits, keep_last: 4}"),
        ("body", "{op: free_text}"),
        ("birth_date", "{op: generalize, to: year}"),
    ):
        assert re.search(rf"\n +{column}: +{re.escape(operator)}", text), column
    with Project.open(demo_dir / "fabric.yaml") as project:
        policies = load_masking(out, project.secrets.master_key, project.known_schema())
        assert policies.default == "suggested"
    again = CliRunner().invoke(
        main, ["rules", "suggest", "-c", str(demo_dir / "fabric.yaml"), "--out", str(out)]
    )
    assert again.exit_code == 1 and "exists" in again.output


def test_preview_shows_each_column_before_and_after(demo_dir: Path) -> None:
    with Project.open(demo_dir / "fabric.yaml") as project:
        entity_id = sorted(project.catalog.entities("customer"))[3]
    result = CliRunner().invoke(
        main, ["rules", "preview", "customer", entity_id, "-c", str(demo_dir / "fabric.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert f"customer {entity_id}: policy analyst" in result.output
    assert "(tokenize)" in result.output and "(keep)" in result.output
    as_json = CliRunner().invoke(
        main,
        [
            "rules",
            "preview",
            "customer",
            entity_id,
            "--role",
            "steward",
            "--json",
            "-c",
            str(demo_dir / "fabric.yaml"),
        ],
    )
    import json

    preview = json.loads(as_json.output)
    cells = [c for rows in preview["tables"].values() for row in rows for c in row]
    assert cells and all(c["before"] == c["after"] and c["op"] == "clear" for c in cells)
    missing = CliRunner().invoke(
        main, ["rules", "preview", "customer", "nope", "-c", str(demo_dir / "fabric.yaml")]
    )
    assert missing.exit_code == 1 and "no customer entity" in missing.output
