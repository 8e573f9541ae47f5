"""Images read through the swapped connection read exactly as each image on its own."""

from __future__ import annotations

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.store.swap import ImageSwap

#: Schemas that share table names and statement counts (so equal schema cookies in the
#: images' own headers) but not columns, order or root pages.
SCHEMAS = [
    ["CREATE TABLE a (x INTEGER, y TEXT)", "CREATE TABLE b (z REAL)"],
    ["CREATE TABLE b (z REAL)", "CREATE TABLE a (x INTEGER, y TEXT)"],
    ["CREATE TABLE a (y TEXT, x INTEGER)", "CREATE TABLE b (z REAL, w TEXT)"],
    ["CREATE TABLE a (x INTEGER, y TEXT)", "CREATE INDEX ax ON a (x)", "CREATE TABLE b (z REAL)"],
]


def image(schema: int, rows: list[tuple[int, str]], page_size: int) -> bytes:
    conn = apsw.Connection(":memory:")
    conn.execute(f"PRAGMA page_size = {page_size}")
    for statement in SCHEMAS[schema]:
        conn.execute(statement)
    conn.executemany("INSERT INTO a (x, y) VALUES (?, ?)", rows)
    conn.executemany("INSERT INTO b (z) VALUES (?)", [(float(x),) for x, _ in rows[::2]])
    return bytes(conn.serialize("main"))


def read(conn: apsw.Connection) -> list[list[tuple[object, ...]]]:
    return [
        conn.execute("SELECT x, y FROM a ORDER BY rowid").fetchall(),
        conn.execute("SELECT z FROM b ORDER BY rowid").fetchall(),
        conn.execute("SELECT count(*), sum(x) FROM a WHERE x > 3").fetchall(),
    ]


_images = st.builds(
    image,
    st.integers(0, len(SCHEMAS) - 1),
    st.lists(st.tuples(st.integers(-5, 50), st.text(max_size=300)), max_size=60),
    st.sampled_from([512, 1024, 4096]),
)


@settings(max_examples=60, deadline=None)
@given(images=st.lists(_images, min_size=1, max_size=12), order=st.data())
def test_each_image_reads_as_itself_in_any_order(images: list[bytes], order: st.DataObject) -> None:
    sequence = order.draw(st.lists(st.sampled_from(range(len(images))), min_size=1, max_size=30))
    swap = ImageSwap()
    try:
        for at in sequence:
            alone = apsw.Connection(":memory:")
            alone.deserialize("main", images[at])
            assert read(swap.load(images[at])) == read(alone)
    finally:
        swap.close()


def test_the_connection_writes_nothing() -> None:
    swap = ImageSwap()
    data = image(0, [(1, "a")], 4096)
    conn = swap.load(data)
    with pytest.raises((apsw.ReadOnlyError, apsw.CantOpenError)):
        conn.execute("INSERT INTO a VALUES (2, 'b')")
    assert swap.image == data and read(swap.load(data))[0] == [(1, "a")]
    swap.close()
