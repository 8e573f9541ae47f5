"""The docs stay true: every CLI command is in the README, every shipped rule file compiles."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from fabric.cli import main
from fabric.config.secrets import Secrets
from fabric.resolve.rules import load_match_rules
from fabric.rules.masking import load_masking

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def commands(group: click.Group, prefix: str = "fabric") -> list[str]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.extend(commands(command, f"{prefix} {name}"))
        else:
            found.append(f"{prefix} {name}")
    return found


@pytest.mark.parametrize("command", commands(main))
def test_docs_every_cli_command_is_in_the_readme(command: str) -> None:
    assert f"`{command}" in README, f"README.md does not document `{command}`"


def test_docs_readme_starts_with_the_two_commands() -> None:
    head = "\n".join(README.splitlines()[:10])
    assert "make demo" in head and "make test" in head


def test_docs_shipped_match_rules_compile() -> None:
    compiled = load_match_rules(ROOT / "rules" / "match.yaml", "customer")
    assert compiled.rule_names


def test_docs_shipped_masking_rules_compile() -> None:
    secrets = Secrets(master_key=b"k" * 32)
    policies = load_masking(ROOT / "rules" / "masking.yaml", secrets.master_key)
    assert not policies.for_policy(None).clear


def test_docs_package_ships_the_same_rules() -> None:
    from importlib import resources

    shipped = resources.files("fabric").joinpath("demo_rules")
    for path in (ROOT / "rules").glob("*.yaml"):
        assert shipped.joinpath(path.name).read_text() == path.read_text()


def test_docs_readme_match_rules_example_loads(tmp_path: Path) -> None:
    section = README.split("## Match rules", 1)[1]
    example = section.split("```yaml", 1)[1].split("```", 1)[0]
    path = tmp_path / "match.yaml"
    path.write_text(example)
    compiled = load_match_rules(path, "customer")
    assert compiled.rule_names == ("same_email", "same_phone_similar_name", "names_and_birth_date")
