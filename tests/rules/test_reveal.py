"""Revealing tokens and FPE values: only for roles allowed to, only with the right column."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric.cli import main
from fabric.entities import EntityService
from fabric.project import Project
from fabric.rules.reveal import RevealError, reveal


def test_a_detokenize_role_gets_emails_and_cards_back(demo_dir: Path) -> None:
    with Project.open(demo_dir / "fabric.yaml") as project:
        service = EntityService(project)
        entity_id = sorted(project.catalog.entities("customer"))[2]
        clear = service.document("customer", entity_id, role="steward")["tables"]
        masked = service.document("customer", entity_id, role="analyst")["tables"]
        account, masked_account = clear["billing_accounts"][0], masked["billing_accounts"][0]
        token, card = masked_account["email"], masked_account["card_number"]
        assert token.startswith("tok_") and card != account["card_number"]
        assert reveal(project, token, role="steward", domain="email") == account["email"]
        assert (
            reveal(project, token, role="steward", column="customer.billing_accounts.email")
            == account["email"]
        )
        assert (
            reveal(project, card, role="admin", column="customer.billing_accounts.card_number")
            == account["card_number"]
        )
        with pytest.raises(RevealError, match="role 'analyst' may not detokenize"):
            reveal(project, token, role="analyst", domain="email")
        with pytest.raises(RevealError, match="may not detokenize"):
            reveal(project, token, role=None, domain="email")  # the default role: analyst
        with pytest.raises(RevealError, match="does not open in domain 'phone'"):
            reveal(project, token, role="steward", domain="phone")
        with pytest.raises(RevealError, match="must mask with fpe"):
            reveal(project, card, role="steward", column="customer.billing_accounts.iban")
    result = CliRunner().invoke(
        main,
        [
            "rules",
            "reveal",
            token,
            "--role",
            "analyst",
            "--domain",
            "email",
            "-c",
            str(demo_dir / "fabric.yaml"),
        ],
    )
    assert result.exit_code == 1 and "may not detokenize" in result.output
    assert account["email"] not in result.output
    ok = CliRunner().invoke(
        main,
        [
            "rules",
            "reveal",
            token,
            "--role",
            "steward",
            "--domain",
            "email",
            "-c",
            str(demo_dir / "fabric.yaml"),
        ],
    )
    assert ok.exit_code == 0 and ok.output.strip() == account["email"]
