"""The project: its rule-set version follows the rules, not their comments or layout."""

from __future__ import annotations

from fabric.demo import DemoProject
from fabric.project import Project
from fabric.sync import sync_project


def test_the_rule_set_version_changes_with_a_rule_and_is_recorded(
    fresh_demo: DemoProject,
) -> None:
    masking = fresh_demo.directory / "rules" / "masking.yaml"
    with Project.open(fresh_demo.config_path) as project:
        first = project.rules_version()
        sync_project(project, full=True)
        assert project.catalog.runs(1)[0].rules_version == first
    masking.write_text("# a new comment\n" + masking.read_text().replace(": ", ":  ", 3))
    with Project.open(fresh_demo.config_path) as project:
        assert project.rules_version() == first  # comments and spacing are not rules
    masking.write_text(masking.read_text().replace("keep_last: 2", "keep_last: 3", 1))
    with Project.open(fresh_demo.config_path) as project:
        changed = project.rules_version()
        assert changed != first
        sync_project(project)
        assert project.catalog.runs(1)[0].rules_version == changed
