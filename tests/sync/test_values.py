"""Match values (and index keys) computed from a pickled batch equal the parent's own."""

from __future__ import annotations

import pickle
from pathlib import Path

from fabric.crypto import KeyedHasher
from fabric.demo import DemoProject
from fabric.project import Project
from fabric.resolve.index import hashed
from fabric.resolve.rules import load_match_rules
from fabric.sync import sync_project
from fabric.sync.values import ValuesJob, match_values

RULES = Path(__file__).parents[2] / "rules" / "match.yaml"
KEY = b"k" * 32


def test_match_values_equal_the_compiled_extractor() -> None:
    rules = load_match_rules(RULES, "customer")
    assert rules.spec is not None
    columns = ("id", "email", "subject", "body")
    rows = [
        (1, " Ada@Example.COM ", "hi", "Call me at (415) 555-0100.\nRegards,\nAda Lovelace"),
        (2, None, "card", "no contact details here"),
        (3, "noreply@example.com", "x", "Best, Bob Stone"),
    ]
    # The job crosses to a worker process by pickle: the rules' spec must survive that.
    job = pickle.loads(
        pickle.dumps(ValuesJob("customer", rules.spec, "support_tickets", columns, rows, KEY))
    )
    extract = rules.extractor("support_tickets", set(columns))
    assert extract is not None
    expected = [extract(dict(zip(columns, row, strict=True))) for row in rows]
    hasher = KeyedHasher(KEY)
    assert match_values(job) == [(v, hashed(rules, hasher, v)) for v in expected]
    assert match_values(job)[0][1][0]  # an email and a phone: keys to file the record under
    assert expected[0]["email"] == "ada@example.com"
    assert expected[0]["phone"] == "+14155550100"
    assert expected[2]["email"] is None  # a never-link value


def test_sync_leaves_no_source_text_in_normaliser_caches(fresh_demo: DemoProject) -> None:
    from fabric.resolve import normalize

    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
    assert normalize._signature_name.cache_info().currsize == 0
    assert normalize._extract_email.cache_info().currsize == 0
