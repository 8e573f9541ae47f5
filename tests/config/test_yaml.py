"""Reading YAML files: deep nesting is refused fast, before PyYAML builds it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fabric.config.documents import MAX_DEPTH, MAX_FILE_BYTES, YamlLoadError, load_yaml_file
from fabric.demo import DemoProject

#: Refusing must take milliseconds; this bound only keeps a loaded CI machine from flaking.
SECONDS = 5.0

#: A YAML document nested to the depth given.
Style = Callable[[int], str]


def flow(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth + "\n"


def flow_mappings(depth: int) -> str:
    return "{a: " * depth + "1" + "}" * depth + "\n"


def block_compact(depth: int) -> str:
    """``- - - 1``: block lists in one line, two bytes a level."""
    return "- " * depth + "1\n"


def block_indented(depth: int) -> str:
    """A mapping per line, each indented one more space: the 1 MiB cap holds ~1,400 levels."""
    return (
        "".join(" " * level + "a:\n" for level in range(depth - 1)) + " " * (depth - 1) + "a: 1\n"
    )


def mixed(depth: int) -> str:
    """Block lists of mappings (``- k:``, two levels a line), then flow lists and mappings.

    At most 200 block levels: the indentation grows with them.
    """
    lines = min(depth // 4, 100)
    rest = depth - 2 * lines
    inner = "".join("{a: " if i % 2 else "[" for i in range(rest)) + "1"
    inner += "".join("}" if i % 2 else "]" for i in reversed(range(rest)))
    block = "".join("  " * i + "- k:\n" for i in range(lines - 1))
    return block + "  " * (lines - 1) + "- k: " + inner + "\n"


def depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


STYLES: list[Style] = [flow, flow_mappings, block_compact, block_indented, mixed]


def refused(path: Path) -> tuple[YamlLoadError, float]:
    started = time.perf_counter()
    with pytest.raises(YamlLoadError) as info:
        load_yaml_file(path)
    seconds = time.perf_counter() - started
    print(f"{path.name}: {path.stat().st_size} bytes refused in {seconds:.3f} s")
    return info.value, seconds


@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.__name__)
def test_yaml_styles_build_the_depth_they_claim(tmp_path: Path, style: Style) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(style(10))
    assert depth_of(load_yaml_file(path).data) == 10


@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.__name__)
def test_yaml_nesting_up_to_the_limit_loads(tmp_path: Path, style: Style) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(style(MAX_DEPTH))
    assert depth_of(load_yaml_file(path).data) == MAX_DEPTH


@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.__name__)
def test_yaml_nesting_past_the_limit_names_its_line(tmp_path: Path, style: Style) -> None:
    path = tmp_path / "deep.yaml"
    text = style(MAX_DEPTH + 1)
    path.write_text(text)
    error, _ = refused(path)
    assert error.reason.startswith(f"nested deeper than {MAX_DEPTH} levels")
    # The line of the first collection past the limit: the last line that opens one.
    opening = [i for i, line in enumerate(text.splitlines(), 1) if re.search(r"[\[{:-]", line)]
    assert error.line == opening[-1]


@pytest.mark.parametrize(
    "style", [flow, flow_mappings, block_compact, mixed], ids=lambda s: s.__name__
)
def test_yaml_refuses_20000_levels_fast(tmp_path: Path, style: Style) -> None:
    path = tmp_path / "masking.yaml"
    path.write_text(style(20_000))
    error, seconds = refused(path)
    assert "nested deeper than" in error.reason and seconds < SECONDS


@pytest.mark.parametrize(
    "style", [flow, flow_mappings, block_compact, block_indented, mixed], ids=lambda s: s.__name__
)
def test_yaml_refuses_a_mebibyte_of_nesting_fast(tmp_path: Path, style: Style) -> None:
    low, high = MAX_DEPTH, 2 * MAX_DEPTH
    while len(style(high).encode()) <= MAX_FILE_BYTES:
        low, high = high, 2 * high
    while low < high:  # the deepest document of this style under the size cap
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(style(mid).encode()) <= MAX_FILE_BYTES else (low, mid - 1)
    path = tmp_path / "masking.yaml"
    path.write_text(style(low))
    assert MAX_FILE_BYTES - 100_000 < path.stat().st_size <= MAX_FILE_BYTES
    error, seconds = refused(path)
    assert "nested deeper than" in error.reason and seconds < SECONDS


def test_yaml_is_parsed_only_by_the_guarded_reader() -> None:
    """Every YAML file fabric reads goes through ``load_yaml_file`` and its limits."""
    package = Path(__file__).resolve().parents[2] / "fabric"
    parsing = re.compile(r"yaml\.(safe_load|load|full_load|unsafe_load|compose|parse|scan)\(")
    found = {
        str(path.relative_to(package.parent))
        for path in package.rglob("*.py")
        if parsing.search(path.read_text())
    }
    assert found == {"fabric/config/documents.py"}  # the key file too


def test_a_deep_key_file_is_refused_without_showing_a_key(fresh_demo: DemoProject) -> None:
    from fabric.config.loader import load_config
    from fabric.config.secrets import load_secrets
    from fabric.errors import ConfigError

    keys = fresh_demo.config_path.parent / "fabric.keys"
    keys.write_text("master_key: c2VjcmV0LXNlY3JldC1zZWNyZXQ\napi_keys: " + "[" * 20_000 + "\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"fabric\.keys:2: cannot read key file") as raised:
        load_secrets(load_config(fresh_demo.config_path))
    assert time.perf_counter() - started < SECONDS
    assert "c2VjcmV0" not in str(raised.value)
