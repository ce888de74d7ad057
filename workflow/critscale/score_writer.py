"""Chunk-aligned, asynchronous writes of captured rows into a score store.

Rows of a model store arrive one forward pass at a time (a few rows of every unit and every ``n``),
but a Zarr chunk of the store holds ``row_chunk`` rows of one unit and one ``n``.  Writing each
forward's rows directly makes Zarr read, merge and rewrite every chunk once per forward.  The
:class:`RowChunkWriter` instead fills an in-memory block of one row chunk (all units, all ``n``)
and hands it, once complete, to a background thread that writes every chunk it covers exactly once
(padded to the key chunk boundary, so no chunk is ever partially written), while the caller runs
the next forward.  At most ``max_pending`` completed blocks wait for the thread, so memory is
bounded by ``2 + max_pending`` row-chunk blocks.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from pathlib import Path

import numpy as np
import zarr

_SLAB_BYTES = 32 * 2**20  # padded float32 values per zarr write call inside the writer thread
LARGEST_ROW_CHUNK = 64  # rows per chunk of a model store at most (the writer buffers a whole row chunk)


def block_bytes(units: int, row_chunk: int, n_ladder) -> int:
    """Bytes of one row-chunk block (all units, all ``n``) of float32 rows."""
    return 4 * units * row_chunk * sum(int(n) for n in n_ladder)


def choose_row_chunk(rows: int, rows_per_forward: int, units: int, n_ladder, budget_bytes: int,
                     largest: int = LARGEST_ROW_CHUNK) -> int:
    """Rows per store chunk: a multiple of the rows one forward pass yields (so a chunk is complete
    after whole forwards), at most ``largest`` and ``rows``, and small enough that one block of it
    fits ``budget_bytes`` (at least one forward's rows)."""
    if rows < 1 or rows_per_forward < 1:
        raise ValueError(f"rows ({rows}) and rows_per_forward ({rows_per_forward}) must be positive")
    per_forward = block_bytes(units, rows_per_forward, n_ladder)
    forwards = max(1, min(budget_bytes // per_forward, max(1, largest // rows_per_forward)))
    return min(rows, forwards * rows_per_forward)


class RowChunkWriter:
    """Write rows ``(units, rows, keys <= n)`` of one ``n`` into the ``scores`` array of a store made
    by :func:`critscale.storage.create_scores_store`, each chunk once, from a writer thread.

    Use as a context manager (or call :meth:`close`): on a clean exit every block must be complete
    and is written; an error in the writer thread is raised in the caller at the next call."""

    def __init__(self, path, *, max_pending: int = 1):
        self.array = zarr.open_array(str(Path(path) / "scores"), mode="r+")
        self.units, self.n_count, self.rows, self.width = self.array.shape
        _, _, self.row_chunk, self.key_chunk = self.array.chunks
        self.n_ladder = [int(n) for n in zarr.open_array(str(Path(path) / "n"), mode="r")[:]]
        self.blocks: dict[int, list[np.ndarray]] = {}  # row-chunk index -> one array per n
        self.filled: dict[int, int] = {}  # row-chunk index -> (unit, n, row) cells written so far
        self.blocks_written = 0
        self.wait_seconds = 0.0  # time the caller waited for the writer thread (queue full)
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="critscale-writer", daemon=True)
        self._thread.start()

    # ---- caller side -------------------------------------------------------------------------

    def put(self, values: np.ndarray, *, unit0: int, n_index: int, row0: int) -> None:
        """Rows ``row0 .. row0 + values.shape[1]`` of units ``unit0 ..`` at ``n_index``; a piece
        must lie inside one row chunk."""
        self._raise_error()
        units, rows, keys = values.shape
        index, start = divmod(row0, self.row_chunk)
        if start + rows > self._chunk_rows(index):
            raise ValueError(f"rows {row0}..{row0 + rows} cross a row chunk of {self.row_chunk} rows")
        if keys > self.n_ladder[n_index]:
            raise ValueError(f"{keys} keys for n = {self.n_ladder[n_index]}")
        block = self._block(index)[n_index]
        block[unit0:unit0 + units, start:start + rows, :keys] = values
        self.filled[index] += units * rows
        if self.filled[index] == self.units * self.n_count * self._chunk_rows(index):
            self._submit(index)

    def close(self) -> None:
        """Wait for every write; raise if a block is incomplete or the writer failed."""
        incomplete = sorted(self.blocks)
        self._queue.put(None)
        self._thread.join()
        self._raise_error()
        if incomplete:
            raise RuntimeError(f"row chunks {incomplete} of the store were never completed")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # stop the thread; the store is incomplete and will be rewritten from scratch
            self.blocks.clear()
            self._queue.put(None)
            self._thread.join()

    def _chunk_rows(self, index: int) -> int:
        return min(self.row_chunk, self.rows - index * self.row_chunk)

    def _block(self, index: int) -> list[np.ndarray]:
        if index not in self.blocks:
            rows = self._chunk_rows(index)
            self.blocks[index] = [np.full((self.units, rows, n), np.nan, dtype=self.array.dtype) for n in self.n_ladder]
            self.filled[index] = 0
        return self.blocks[index]

    def _submit(self, index: int) -> None:
        block = self.blocks.pop(index)
        del self.filled[index]
        t0 = time.perf_counter()
        self._queue.put((index, block))
        self.wait_seconds += time.perf_counter() - t0

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError("writing the score store failed") from self._error

    # ---- writer thread -----------------------------------------------------------------------

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(*item)
                except BaseException as error:  # re-raised in the caller
                    self._error = error

    def _write(self, index: int, block: list[np.ndarray]) -> None:
        r0 = index * self.row_chunk
        rows = self._chunk_rows(index)
        for n_index, values in enumerate(block):
            # pad to the key-chunk boundary so every chunk touched is covered whole (never read back);
            # chunks beyond it hold only NaN and stay unwritten
            width = min(self.width, math.ceil(values.shape[-1] / self.key_chunk) * self.key_chunk)
            step = max(1, _SLAB_BYTES // (4 * rows * width))
            for u0 in range(0, self.units, step):
                slab = np.full((min(step, self.units - u0), rows, width), np.nan, dtype=self.array.dtype)
                slab[..., : values.shape[-1]] = values[u0:u0 + step]
                self.array[u0:u0 + len(slab), n_index, r0:r0 + rows, :width] = slab
        self.blocks_written += 1
