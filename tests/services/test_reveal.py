"""Revealing tokens and FPE values: only for roles allowed to, only with the right column."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from legacy_tokens import legacy_token

from fabric.cli import main
from fabric.errors import RevealError
from fabric.project import Project
from fabric.rules.tokens import TOKEN_BUCKET_BYTES, Tokenizer, masking_key_id
from fabric.services.entities import EntityService
from fabric.services.reveal import reveal


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


def test_reveal_opens_tokens_made_before_padding(demo_dir: Path) -> None:
    with Project.open(demo_dir / "fabric.yaml") as project:
        master = project.secrets.master_key
        assert master is not None
        old = legacy_token(master, "email", "ada@example.com")
        new = Tokenizer(master, "email").tokenize("ada@example.com")
        assert new != old and new.startswith(f"tok_{masking_key_id(master)}p_")
        assert reveal(project, old, role="steward", domain="email") == "ada@example.com"
        assert (
            reveal(project, old, role="steward", column="customer.billing_accounts.email")
            == "ada@example.com"
        )
    config = str(demo_dir / "fabric.yaml")
    result = CliRunner().invoke(
        main, ["rules", "reveal", old, "--role", "steward", "--domain", "email", "-c", config]
    )
    assert result.exit_code == 0 and result.output.strip() == "ada@example.com"


def test_reveal_of_demo_tokens_hides_email_lengths(demo_dir: Path) -> None:
    with Project.open(demo_dir / "fabric.yaml") as project:
        service = EntityService(project)
        lengths: dict[int, set[int]] = {}
        for entity_id in sorted(project.catalog.entities("customer"))[:40]:
            clear = service.document("customer", entity_id, role="steward")["tables"]
            masked = service.document("customer", entity_id, role="analyst")["tables"]
            for row, masked_row in zip(
                clear["billing_accounts"], masked["billing_accounts"], strict=True
            ):
                bucket = len(row["email"].encode()) // TOKEN_BUCKET_BYTES
                lengths.setdefault(bucket, set()).add(len(masked_row["email"]))
                assert (
                    reveal(project, masked_row["email"], role="steward", domain="email")
                    == (row["email"])
                )
    assert lengths and all(len(found) == 1 for found in lengths.values())
