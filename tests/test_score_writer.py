"""Chunk-aligned asynchronous writes of captured rows: each chunk written once, same values as
direct region writes."""

from collections import Counter

import numpy as np
import pytest
import zarr

from critscale.score_writer import RowChunkWriter, block_bytes, choose_row_chunk
from critscale.storage import create_scores_store, open_store, store_checksum, write_scores

UNITS, LADDER, ROWS, ROW_CHUNK, KEY_CHUNK = 5, [16, 32, 64], 12, 4, 32


def make_store(path):
    create_scores_store(path, units=[f"u{i}" for i in range(UNITS)], n_ladder=LADDER, sequence=np.arange(ROWS),
                        row_chunk=ROW_CHUNK, key_chunk=KEY_CHUNK)


def random_rows(seed=0):
    """rows[n_index]: (units, rows, n) with some NaN (masked keys)."""
    rng = np.random.default_rng(seed)
    out = []
    for n in LADDER:
        values = rng.normal(size=(UNITS, ROWS, n)).astype(np.float32)
        values[..., n - 3:] = np.nan  # keys after the query
        out.append(values)
    return out


@pytest.fixture
def chunk_writes(monkeypatch):
    """Counts every write of a chunk key of the ``scores`` array (LocalStore.set)."""
    counts = Counter()
    original = zarr.storage.LocalStore.set

    async def counting_set(self, key, value):
        if key.startswith("c/"):  # chunk keys of the array opened at <store>/scores
            counts[key] += 1
        return await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", counting_set)
    return counts


def feed(writer, rows, piece=2):
    """As the driver does: one forward yields ``piece`` rows of every unit and every n, layer by layer."""
    for row0 in range(0, ROWS, piece):
        for unit0 in range(0, UNITS, 1):
            for n_index, values in enumerate(rows):
                writer.put(values[unit0:unit0 + 1, row0:row0 + piece], unit0=unit0, n_index=n_index, row0=row0)


def test_each_chunk_written_once_with_the_values_of_direct_writes(tmp_path, chunk_writes):
    rows = random_rows()
    make_store(tmp_path / "direct.zarr")
    for n_index, values in enumerate(rows):  # the old path: region writes of whatever arrives
        for row0 in range(0, ROWS, 2):
            write_scores(tmp_path / "direct.zarr", values[:, row0:row0 + 2], unit=slice(0, UNITS), n_index=n_index,
                         rows=slice(row0, row0 + 2))
    direct = dict(chunk_writes)
    assert max(direct.values()) > 1  # partial row chunks: the old path rewrites chunks
    chunk_writes.clear()

    make_store(tmp_path / "chunked.zarr")
    with RowChunkWriter(tmp_path / "chunked.zarr") as writer:
        feed(writer, rows)
    assert writer.blocks_written == ROWS // ROW_CHUNK
    assert set(chunk_writes.values()) == {1}
    assert set(chunk_writes) == set(direct)  # same chunks exist (all-NaN key chunks are never written)
    # n = 16, 32: one key chunk each; n = 64: two
    assert len(chunk_writes) == UNITS * (ROWS // ROW_CHUNK) * (1 + 1 + 2)
    np.testing.assert_array_equal(open_store(tmp_path / "chunked.zarr").scores.values,
                                  open_store(tmp_path / "direct.zarr").scores.values)
    assert store_checksum(tmp_path / "chunked.zarr") == store_checksum(tmp_path / "direct.zarr")
    expected = np.full((UNITS, len(LADDER), ROWS, LADDER[-1]), np.nan, dtype=np.float32)
    for n_index, values in enumerate(rows):
        expected[:, n_index, :, : LADDER[n_index]] = values
    np.testing.assert_array_equal(open_store(tmp_path / "chunked.zarr").scores.values, expected)


def test_arrival_order_does_not_change_the_store(tmp_path):
    rows = random_rows(1)
    make_store(tmp_path / "a.zarr")
    with RowChunkWriter(tmp_path / "a.zarr") as writer:
        feed(writer, rows, piece=2)
    make_store(tmp_path / "b.zarr")
    with RowChunkWriter(tmp_path / "b.zarr", max_pending=3) as writer:
        for row0 in reversed(range(0, ROWS, 4)):
            for n_index in reversed(range(len(LADDER))):
                writer.put(rows[n_index][:, row0:row0 + 4], unit0=0, n_index=n_index, row0=row0)
    assert store_checksum(tmp_path / "a.zarr") == store_checksum(tmp_path / "b.zarr")


def test_incomplete_chunk_and_misaligned_piece_are_errors(tmp_path):
    rows = random_rows()
    make_store(tmp_path / "s.zarr")
    writer = RowChunkWriter(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="cross a row chunk"):
        writer.put(rows[0][:, 2:6], unit0=0, n_index=0, row0=2)
    with pytest.raises(ValueError, match="keys for n = 16"):
        writer.put(rows[1][:, :2], unit0=0, n_index=0, row0=0)
    writer.put(rows[0][:, :2], unit0=0, n_index=0, row0=0)
    with pytest.raises(RuntimeError, match=r"row chunks \[0\]"):
        writer.close()


def test_writer_thread_errors_reach_the_caller(tmp_path, monkeypatch):
    make_store(tmp_path / "s.zarr")

    def broken(self, *args):
        raise OSError("disk full")

    monkeypatch.setattr(RowChunkWriter, "_write", broken)
    writer = RowChunkWriter(tmp_path / "s.zarr")
    with pytest.raises(RuntimeError, match="writing the score store failed"):
        feed(writer, random_rows())
        writer.close()


def test_choose_row_chunk():
    per_forward = block_bytes(10, 8, LADDER)
    assert choose_row_chunk(256, 8, 10, LADDER, budget_bytes=100 * per_forward) == 64  # capped at 64 rows
    assert choose_row_chunk(256, 8, 10, LADDER, budget_bytes=3 * per_forward) == 24   # whole forwards in budget
    assert choose_row_chunk(256, 8, 10, LADDER, budget_bytes=1) == 8                 # never below one forward
    assert choose_row_chunk(20, 8, 10, LADDER, budget_bytes=100 * per_forward) == 20  # never above the rows
    with pytest.raises(ValueError, match="rows_per_forward"):
        choose_row_chunk(20, 0, 10, LADDER, budget_bytes=1)
