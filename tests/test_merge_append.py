"""A live append's merge (no key of the new rows stored yet) takes a short path around DuckDB; its partition must
be the one ``sql/merge_partition.sql`` gives (the oracle: the template run in DuckDB over the same rows)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from loaders.ingest import merge_partition
from warehouse import schemas
from warehouse.store import StagedWrites
from warehouse.templates import render

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)


def bars(keys: list[tuple[str | None, int]], price: float) -> pa.Table:
    n = len(keys)
    return pa.table({
        "contract": [c for c, _ in keys], "instrument_id": [None] * n,
        "ts": [T0 + timedelta(minutes=m) for _, m in keys],
        "open": [price + i for i in range(n)], "high": [price + i + 1 for i in range(n)],
        "low": [price + i - 1 for i in range(n)], "close": [price + i for i in range(n)], "volume": [7] * n,
        "open_interest": [None] * n, "source": ["ib:realtime"] * n,
    }).cast(schemas.BARS)


def oracle(old: pa.Table, new: pa.Table) -> pa.Table:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("old_rows", old)
    con.register("new_rows", new)
    values = tuple(f.name for f in new.schema if f.name not in ("contract", "ts", "source"))
    return con.sql(render("merge_partition.sql", mode="rows", value_columns=values, stale=False)).to_arrow_table().cast(
        new.schema)


contracts = st.sampled_from(["ESH6", "ESM6", None])


@settings(max_examples=40, deadline=None)
@given(stored=st.sets(st.tuples(contracts, st.integers(0, 60)), min_size=1, max_size=25),
       added=st.sets(st.tuples(contracts, st.integers(0, 90)), min_size=1, max_size=6))
def test_an_append_merges_as_the_template_does(tmp_path_factory, stored, added):
    added = added - stored  # the short path's case: no key stored yet (overlaps take the template)
    if not added:
        return
    old, new = bars(sorted(stored, key=str), 100.0), bars(sorted(added, key=str), 200.0)
    target = tmp_path_factory.mktemp("p") / "live-2026-03-02.parquet"
    pq.write_table(old, target)
    with StagedWrites() as batch:
        result = merge_partition(batch, target, new, None)
        batch.commit()
    assert (result.loaded, result.unchanged) == (new.num_rows, 0)
    assert pq.read_table(target).cast(new.schema).equals(oracle(old, new))


def test_a_stored_key_still_replaces_through_the_template(tmp_path):
    old = bars([("ESH6", 0), ("ESH6", 1)], 100.0)
    new = bars([("ESH6", 1), ("ESH6", 2)], 200.0)
    target = tmp_path / "live-2026-03-02.parquet"
    pq.write_table(old, target)
    with StagedWrites() as batch:
        result = merge_partition(batch, target, new, None)
        batch.commit()
    assert (result.loaded, result.unchanged) == (2, 0)
    assert pq.read_table(target).cast(new.schema).equals(oracle(old, new))
    assert pq.read_table(target)["close"].to_pylist() == [100.0, 200.0, 201.0]
