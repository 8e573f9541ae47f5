"""The command line through click's runner: output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cli_help_lists_commands(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "generate", "sync", "serve", "entity", "rules"):
        assert command in result.output


def test_cli_demo_no_serve_prints_working_requests(runner: CliRunner, tmp_path: Path) -> None:
    directory = tmp_path / "d"
    result = runner.invoke(
        main, ["demo", "--dir", str(directory), "--customers", "80", "--no-serve"]
    )
    assert result.exit_code == 0, result.output
    assert "created" in result.output and "curl -s" in result.output
    assert (directory / "fabric.yaml").read_text().startswith("# fabric project")
    assert stat.S_IMODE((directory / "fabric.keys").stat().st_mode) == 0o600
    assert {p.name for p in (directory / "rules").iterdir()} >= {"match.yaml", "masking.yaml"}
    # analyst's line comes before the steward's (least privileged first)
    assert result.output.index("# as analyst") < result.output.index("# as steward")
    # re-running reuses the project and keeps the user's edits
    config = directory / "fabric.yaml"
    config.write_text(config.read_text() + "# my edit\n")
    again = runner.invoke(main, ["demo", "--dir", str(directory), "--no-serve"])
    assert again.exit_code == 0, again.output
    assert "reusing the project in" in again.output
    assert "unchanged" in again.output and config.read_text().endswith("# my edit\n")


def test_cli_entity_show_matches_the_service(runner: CliRunner, demo_dir: Path) -> None:
    from fabric.project import Project
    from fabric.services.entities import EntityService

    config = str(demo_dir / "fabric.yaml")
    with Project.open(demo_dir / "fabric.yaml") as project:
        entity_id = project.catalog.sample_ids("customer", 1)[0]
        expected = EntityService(project).document("customer", entity_id, role="analyst")
    result = runner.invoke(main, ["entity", "show", "-c", config, "customer", entity_id])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == expected


def test_cli_entity_show_unknown_is_exit_1(runner: CliRunner, demo_dir: Path) -> None:
    result = runner.invoke(
        main, ["entity", "show", "-c", str(demo_dir / "fabric.yaml"), "customer", "nope"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: no customer entity with this id")
    assert "Traceback" not in result.output


def test_cli_missing_config_is_exit_1(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["sync", "-c", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert "missing.yaml: file not found" in result.output
    assert "Traceback" not in result.output


def test_cli_usage_error_is_exit_2(runner: CliRunner) -> None:
    assert runner.invoke(main, ["sync", "--workers", "zero"]).exit_code == 2
    assert runner.invoke(main, ["no-such-command"]).exit_code == 2


def test_cli_unreachable_database_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    from fabric.demo import create_demo_project

    created = create_demo_project(tmp_path / "p", customers=20)
    config = created.config_path
    text = config.read_text()
    config.write_text(
        text.replace(
            "url: sqlite:///sources/crm.db", "url: postgresql://fabric:hunter2@127.0.0.1:1/nothing"
        )
    )
    result = runner.invoke(main, ["sync", "-c", str(config)])
    assert result.exit_code == 1
    assert result.output.startswith("error: source 'crm' (postgresql+psycopg://fabric:***@")
    assert "hunter2" not in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (created.directory / "store").exists()


def test_cli_generate_writes_sources(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["generate", "--out", str(tmp_path), "--customers", "30"])
    assert result.exit_code == 0, result.output
    assert "crm.customers" in result.output
    assert (tmp_path / "ground_truth.csv").exists()


def test_cli_rules_check(runner: CliRunner, demo_dir: Path, tmp_path: Path) -> None:
    import shutil

    ok = runner.invoke(main, ["rules", "check", "-c", str(demo_dir / "fabric.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "transforms.yaml" in ok.output and "masking.yaml" in ok.output
    copy = tmp_path / "p"
    shutil.copytree(demo_dir, copy)
    masking = copy / "rules" / "masking.yaml"
    masking.write_text(masking.read_text().replace("{op: tokenize,", "{op: tokenise,", 1))
    bad = runner.invoke(main, ["rules", "check", "-c", str(copy / "fabric.yaml")])
    assert bad.exit_code == 1
    assert "masking.yaml:" in bad.output and "did you mean 'tokenize'" in bad.output
    assert os.path.exists(copy / "store")


def test_cli_rules_check_named_files(runner: CliRunner, tmp_path: Path) -> None:
    from fabric.cli import main as cli

    root = Path(__file__).resolve().parents[1] / "rules"
    ok = runner.invoke(
        cli,
        [
            "rules",
            "check",
            "-c",
            str(tmp_path / "none.yaml"),
            str(root / "masking.yaml"),
            str(root / "match.yaml"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "(masking rules)" in ok.output and "(match rules)" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("- not\n- a mapping\n")
    result = runner.invoke(cli, ["rules", "check", str(bad)])
    assert result.exit_code == 1 and "bad.yaml: a rule file must be a mapping" in result.output


def test_cli_demo_dir_that_is_a_file(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    result = runner.invoke(main, ["demo", "--dir", str(target), "--no-serve"])
    assert result.exit_code == 1
    assert "cannot use" in result.output and "Traceback" not in result.output


def test_cli_missing_driver_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    from fabric.demo import create_demo_project

    created = create_demo_project(tmp_path / "p", customers=20)
    config = created.config_path
    config.write_text(
        config.read_text().replace("url: sqlite:///sources/crm.db", "url: mysql://u@127.0.0.1/crm")
    )
    result = runner.invoke(main, ["sync", "-c", str(config)])
    assert result.exit_code == 1
    assert "database driver 'mysql' is not installed" in result.output


def test_cli_serve_port_in_use(runner: CliRunner, demo_dir: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(
            main, ["serve", "-c", str(demo_dir / "fabric.yaml"), "--port", str(port)]
        )
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


_WARNS_THEN_FAILS = """
import logging
from fabric.cli import main
from fabric.errors import StoreUnavailableError
from fabric.project import Project

def open_(path):
    # What psycopg logs when a pipeline's connection was lost under it, before our error.
    logging.getLogger("psycopg").warning("error ignored terminating <Pipeline>: lost")
    raise StoreUnavailableError("the store at postgresql://127.0.0.1:1/x does not answer")

Project.open = staticmethod(open_)
main(["store", "verify"])
"""


def test_a_store_that_goes_away_is_one_line_whatever_the_driver_logs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WARNS_THEN_FAILS],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: the store at postgresql://127.0.0.1:1/x does not answer"
    ]
