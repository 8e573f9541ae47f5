"""fabric.yaml loading: strict models and messages naming file, line, path and what is allowed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fabric.config import load_config
from fabric.config.documents import MAX_DEPTH
from fabric.demo import DemoProject
from fabric.errors import ConfigError, FabricError
from fabric.project import Project

MINIMAL = """\
sources:
  crm:
    url: sqlite:///crm.db
    tables:
      customers: {primary_key: id}
entities:
  customer:
    match: match.yaml
    tables:
      crm_customers: {source: crm, table: customers}
rules:
  masking: masking.yaml
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fabric.yaml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_loader_accepts_minimal_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.root == tmp_path.resolve()
    assert config.store.shards == 8
    assert config.resolve(Path("store")) == tmp_path.resolve() / "store"


def test_loader_unknown_key_names_line_path_and_allowed(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "customers: {primary_key: id}", "customers: {primary_key: id, watermrk: updated_at}"
    )
    message = error_of(write(tmp_path, text))
    assert message.endswith(
        "fabric.yaml:5 sources.crm.tables.customers.watermrk: unknown key; did you mean "
        "'watermark'? (allowed: columns, csv, file, name, primary_key, schema, watermark)"
    )


def test_loader_wrong_type_names_path(tmp_path: Path) -> None:
    text = MINIMAL + "store:\n  shards: many\n"
    message = error_of(write(tmp_path, text))
    assert "fabric.yaml:14 store.shards: " in message
    assert "integer" in message


def test_loader_missing_required_key(tmp_path: Path) -> None:
    text = MINIMAL.replace("rules:\n  masking: masking.yaml\n", "")
    message = error_of(write(tmp_path, text))
    assert message.endswith("fabric.yaml:1 rules: required key is missing")


def test_loader_missing_file_says_how_to_start(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.yaml")
    assert "nope.yaml: file not found" in message
    assert "fabric demo" in message


def test_loader_reports_every_problem_at_once(tmp_path: Path) -> None:
    text = MINIMAL.replace("primary_key: id", "primary_key: id, bogus: 1") + "colour: blue\n"
    lines = error_of(write(tmp_path, text)).splitlines()
    assert len(lines) == 2
    assert any("colour: unknown key" in line for line in lines)
    assert any("customers.bogus: unknown key" in line for line in lines)


def test_loader_checks_references_between_sections(tmp_path: Path) -> None:
    text = MINIMAL.replace("{source: crm, table: customers}", "{source: crm, table: clients}")
    text += "default_role: boss\n"
    lines = error_of(write(tmp_path, text)).splitlines()
    assert any(
        "entities.customer.tables.crm_customers.table: source 'crm' declares no such "
        "table (declared: customers)" in line
        for line in lines
    )
    assert any("default_role: unknown role" in line for line in lines)


def test_loader_rejects_yaml_aliases(tmp_path: Path) -> None:
    text = MINIMAL + "api: &a {port: 8000}\nstore: *a\n"
    message = error_of(write(tmp_path, text))
    assert "fabric.yaml:13: YAML anchors and aliases" in message


def test_loader_rejects_malformed_yaml_with_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, MINIMAL + "store: [unclosed\n"))
    assert "fabric.yaml:" in message and "not valid YAML" in message


def test_loader_rejects_non_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in error_of(write(tmp_path, "- just\n- a list\n"))


def test_loader_never_echoes_values(tmp_path: Path) -> None:
    text = MINIMAL + "api:\n  port: s3cr3t-value\n"
    assert "s3cr3t-value" not in error_of(write(tmp_path, text))


def test_loader_rejects_reserved_and_case_colliding_tables(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "      crm_customers: {source: crm, table: customers}\n",
        "      crm_customers: {source: crm, table: customers}\n"
        "      CRM_customers: {source: crm, table: customers}\n"
        "      _meta: {source: crm, table: customers}\n",
    )
    message = error_of(write(tmp_path, text))
    assert "tables.CRM_customers: differs from table 'crm_customers' only in case" in message
    assert "tables._meta: table names starting with '_' are reserved" in message


def test_loader_rejects_duplicate_api_keys(tmp_path: Path) -> None:
    digest = "a" * 64
    text = MINIMAL + (
        "roles:\n  r: {policy: p}\napi:\n  keys:\n"
        f"    - {{name: k1, role: r, sha256: {digest}}}\n"
        f"    - {{name: k1, role: r, sha256: {digest}}}\n"
    )
    message = error_of(write(tmp_path, text))
    assert "api.keys.1.name: duplicate key name" in message
    assert "api.keys.1.sha256: the same key is configured twice" in message


def test_loader_refuses_deep_nesting_fast_naming_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "store: " + "[" * 20_000 + "]" * 20_000 + "\n")
    started = time.perf_counter()
    message = error_of(path)
    seconds = time.perf_counter() - started
    print(f"20,000 levels refused in {seconds:.3f} s")
    assert message.endswith(
        f"fabric.yaml:13: nested deeper than {MAX_DEPTH} levels of mappings and lists; "
        "fabric files need far fewer: flatten it"
    )
    assert seconds < 5.0  # milliseconds; generous for a busy CI machine


@pytest.mark.parametrize(
    "name", ["fabric.yaml", "masking.yaml", "match.yaml", "transforms.yaml", "features.yaml"]
)
def test_every_project_file_refuses_deep_nesting(fresh_demo: DemoProject, name: str) -> None:
    """fabric.yaml and every rule file are read with the depth limit, as at start and reload."""
    root = fresh_demo.config_path.parent
    path = root / name if name == "fabric.yaml" else root / "rules" / name
    path.write_text(path.read_text() + "zz_deep:\n" + "- " * 20_000 + "1\n")
    line = len(path.read_text().splitlines())
    started = time.perf_counter()
    with pytest.raises(FabricError) as info, Project.open(fresh_demo.config_path) as project:
        project.prepare()
        project.rules_version()
    assert f"{path.name}:{line}: nested deeper than {MAX_DEPTH} levels" in str(info.value)
    assert time.perf_counter() - started < 5.0


def test_executor_defaults_to_inline_local_and_takes_a_shorthand(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert (config.executor.kind, config.executor.workers, config.executor.scheduler) == (
        "local",
        1,
        None,
    )
    dask = load_config(write(tmp_path, MINIMAL + "executor: dask\n"))
    assert dask.executor.kind == "dask" and dask.executor.scheduler is None
    given = load_config(
        write(tmp_path, MINIMAL + "executor: {kind: dask, scheduler: tcp://127.0.0.1:8786}\n")
    )
    assert given.executor.scheduler == "tcp://127.0.0.1:8786"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "executor: {kind: local, scheduler: tcp://127.0.0.1:8786}\n",
            "scheduler: is for kind: dask",
        ),
        ("executor: {kind: spark}\n", "executor.kind"),
        ("executor: {workers: 0}\n", "executor.workers"),
        ("executor: {schedular: x}\n", "executor.schedular: unknown key"),
    ],
)
def test_executor_mistakes_are_named(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(write(tmp_path, MINIMAL + text))
    assert "fabric.yaml" in message and expected in message, message
