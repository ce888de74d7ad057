"""The chunked Dask stage: any score store in, a statistics store out.

Each block holds whole rows (the key axis is never split, the statistics need the full row) of
one context length; rows are processed in batches whose size is set by a memory budget, so peak
memory depends on the budget and the number of workers, not on the size of the store.  Every
per-row result depends on that row alone and the compiled kernel sums each row in a fixed order
(see :mod:`critscale.kernels`), so the store is the same, byte for byte, for any chunking,
scheduler or number of workers.  The stage logs how many blocks are done as it goes.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.callbacks import Callback
from dask.base import tokenize
from dask.utils import key_split

from . import storage
from .study import model_source_name
from .gapstats import DESCRIPTIONS, Grids, feature_layout, pack

log = logging.getLogger(__name__)

#: Scalar per-row quantities that get (unit, n) quantile aggregates in the statistics store.
AGGREGATED = ("accumulation_scale", "contact_gap", "contact_exponent", "contact_entropy", "resolved_scale")
INTEGER_QUANTITIES = ("n_keys", "ties", "gap_count")
DEFAULT_MEMORY_BUDGET = 64 * 2**20  # bytes of float64 work arrays per batch of rows
#: Scores per block at the longest n (4 MiB of float32): each block pays Python, Dask and Zarr
#: costs of its own (about 4 ms), so blocks of a few rows spend as much on those as on the rows.
BLOCK_ELEMENTS = 2**20
#: Packed values per Zarr chunk of the statistics store (32 MiB of float64): a chunk costs about 3 ms
#: of Zarr's own work to write, so a store of 32768 rows of 512 keys writes 44 chunks, not 88 at 16 MiB
#: (the stage 0.1 s faster of 1.5 s); a figure reading 4 heads of a SmolLM2 store takes 0.15 s, not 0.11.
_WRITE_ELEMENTS = 2**22
PROGRESS_INTERVAL = 30.0  # seconds between progress lines in the log
#: Name of the block tasks.  Graph optimisation fuses them with the tasks around them, so it is
#: looked for as a word of the keys' prefixes (see :func:`_block_prefixes`); one alphabetic word,
#: because ``key_split`` ends a prefix at the first word that is not.
_BLOCK_PREFIX = "statsblock"


def _pack_block(block: np.ndarray, grids: Grids, memory_budget: int, exclude_first_keys: int) -> np.ndarray:
    """Packed statistics of a ``(unit, row, key)`` block, computed in memory-bounded batches;
    the first ``exclude_first_keys`` keys of every row are masked (not competitors)."""
    units, rows, keys = block.shape
    flat = block.reshape(units * rows, keys)
    if exclude_first_keys:
        flat = flat.astype(np.result_type(flat.dtype, np.float32), copy=True)
        flat[:, :exclude_first_keys] = np.nan
    # pack() holds two float copies of each row (cast, sorted) and its packed output; budgeting
    # eight float64 rows leaves room for the kernel's row-wide buffers and Dask's own copies.
    batch = max(1, memory_budget // (8 * 8 * max(keys, 1)))
    out = np.concatenate([pack(flat[i : i + batch], grids) for i in range(0, len(flat), batch)])
    return out.reshape(units, rows, grids.width)


def inverted_cdf_quantiles(values: np.ndarray, levels) -> np.ndarray:
    """``np.nanquantile(values, levels, axis=-1, method="inverted_cdf")`` (same values and dtype)
    with the quantile axis last, in one sort of the whole array: numpy's NaN-skipping quantile
    loops over 1-d slices in Python, which made the response curves' quantiles the dearest part
    of a bundle."""
    ordered = np.sort(values, axis=-1)  # NaN sorts last
    inexact = ordered.dtype.kind == "f"
    missing = np.isnan(ordered) if inexact else np.zeros(ordered.shape, dtype=bool)
    count = ordered.shape[-1] - missing.sum(axis=-1, keepdims=True)
    virtual = count * np.asarray(levels, dtype=np.float64) - 1  # numpy's index for inverted_cdf
    below = np.floor(virtual)
    index = np.maximum(np.where(virtual == below, below, below + 1), 0).astype(np.intp)
    picked = np.take_along_axis(ordered, np.minimum(index, ordered.shape[-1] - 1), axis=-1)
    return np.where(count > 0, picked, np.nan).astype(ordered.dtype) if inexact else picked


def row_quantiles(values: xr.DataArray, quantiles) -> xr.DataArray:
    """Quantiles over rows, ``inverted_cdf`` so that a quantile is always an observed value (and
    ``inf`` from ties never turns into NaN); missing rows (NaN) are left out.  Same values,
    dimensions and coordinates as ``values.quantile(..., method="inverted_cdf")``, lazy (Dask, all
    rows in one chunk).  Built on the Dask array itself: through ``xr.apply_ufunc`` the graph of a
    variable took 1.7–2.3 ms, this way 1.0 ms (70 heads x 6 lengths x 128 rows x 43 betas)."""
    levels = [float(q) for q in quantiles]
    rows_last = values.chunk(row=-1).transpose(..., "row")
    data = rows_last.data
    picked = data.map_blocks(
        inverted_cdf_quantiles, levels, chunks=data.chunks[:-1] + ((len(levels),),), dtype=values.dtype,
        meta=np.empty((0,) * data.ndim, dtype=values.dtype),
    )
    coords = {name: coord for name, coord in values.coords.items() if "row" not in coord.dims}
    out = xr.DataArray(da.moveaxis(picked, -1, 0), dims=("quantile", *rows_last.dims[:-1]),
                       coords=coords | {"quantile": levels})
    out.name = values.name  # not the Dask array's name, which xarray would take
    return out


def block_shape(units: int, rows: int, n: int, row_chunk: int, block_elements: int,
                width: int) -> tuple[int, int]:
    """Units and rows of a block of rows of ``n`` keys: at least ``row_chunk`` rows of one unit,
    grown towards ``block_elements`` scores, by units first (a model store: layers x heads of few
    rows each), then, once every unit is in, by multiples of ``row_chunk`` rows (a family store of
    many short rows), but never past :data:`_WRITE_ELEMENTS` packed values of ``width`` per row,
    which bounds a block's output where rows are short."""
    row_chunk = max(1, min(int(row_chunk), rows))
    fitting_units = min(block_elements // (row_chunk * n), _WRITE_ELEMENTS // (row_chunk * width))
    unit_chunk = int(np.clip(fitting_units, 1, units))
    if unit_chunk < units:
        return unit_chunk, row_chunk
    fitting = min(block_elements // (units * n), _WRITE_ELEMENTS // (units * width))
    return units, int(np.clip(fitting // row_chunk * row_chunk, row_chunk, rows))


def _packed_rows(scores: xr.Dataset, grids: Grids, row_chunk: int, memory_budget: int,
                 exclude_first_keys: int, block_elements: int) -> da.Array:
    """Lazy ``(unit, n, row, feature)`` packed statistics of every row, in blocks of whole rows of
    one length, chunked for the store.  Each length's blocks are sized by its own ``n``: rows
    shorter than the key axis (padded with NaN to the longest ``n``) would otherwise come in the
    long rows' small blocks, each paying its fixed cost."""
    units, _, rows, longest = scores["scores"].shape
    per_n = []
    for i, n in enumerate(scores["n"].values.tolist()):
        unit_chunk, block_rows = block_shape(units, rows, n, row_chunk, block_elements, grids.width)
        # One read per block (a store opened without Dask is chunked here): Zarr then decodes
        # the block's chunks together, at about two thirds of the cost per chunk of one call each.
        block = scores["scores"][:, i, :, :n].chunk({"unit": unit_chunk, "row": block_rows, "key": -1}).data
        per_n.append(
            block.map_blocks(
                _pack_block,
                grids,
                memory_budget,
                exclude_first_keys,
                name=f"{_BLOCK_PREFIX}-{tokenize(block, grids, memory_budget, exclude_first_keys)}",
                dtype=np.float64,
                chunks=(block.chunks[0], block.chunks[1], (grids.width,)),
                meta=np.empty((0, 0, 0)),
            )
        )
    # Zarr chunks of the store: the longest length's blocks (never split) merged, rows first,
    # then units, up to _WRITE_ELEMENTS, because each chunk read or write costs about a
    # millisecond of fixed overhead; the values do not depend on the chunking.
    unit_chunk, block_rows = block_shape(units, rows, longest, row_chunk, block_elements, grids.width)
    write_rows = int(np.clip(_WRITE_ELEMENTS // (unit_chunk * grids.width) // block_rows * block_rows, block_rows, rows))
    write_units = int(np.clip(_WRITE_ELEMENTS // (write_rows * grids.width), unit_chunk, units))
    return da.stack([part.rechunk({0: write_units, 1: write_rows}) for part in per_n], axis=1)


def gap_statistics(
    scores: xr.Dataset,
    grids: Grids,
    *,
    quantiles=(0.1, 0.25, 0.5, 0.75, 0.9),
    row_chunk: int = 256,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    exclude_first_keys: int = 0,
    block_elements: int = BLOCK_ELEMENTS,
) -> xr.Dataset:
    """Lazy statistics dataset of a score store (see ``storage`` for the layout).

    ``exclude_first_keys = k`` masks the first ``k`` keys of every row (the attention-sink
    variant) before the statistics; a row left without a key is an empty row (NaN, ``n_keys = 0``).

    Per row: every quantity of :func:`critscale.gapstats.row_statistics`; per ``(unit, n)``:
    quantiles over rows of the scalar quantities (``<name>_quantiles``, ``inverted_cdf`` so that a
    quantile is always an observed value and ``inf`` from ties never turns into NaN) and the number
    of tied rows.  Variables of the score store without a ``key`` dimension (predictions) and its
    attributes are carried over, so the statistics store is self-describing.  ``row_chunk`` and
    ``block_elements`` shape the blocks (:func:`block_shape`); the values do not depend on them.
    """
    if int(exclude_first_keys) != exclude_first_keys or exclude_first_keys < 0:
        raise ValueError(f"exclude_first_keys must be an integer >= 0, got {exclude_first_keys!r}")
    packed = _packed_rows(scores, grids, row_chunk, memory_budget, int(exclude_first_keys), block_elements)

    coords = {name: coord for name, coord in scores.coords.items() if "key" not in coord.dims}
    coords.update(t=grids.t, r=grids.resolutions, beta=grids.beta, rho=grids.rho)
    variables = {}
    for name, (where, dim) in feature_layout(grids).items():
        array = packed[..., where]
        if name in INTEGER_QUANTITIES:
            array = array.astype(np.int64)
        dims = ("unit", "n", "row") + ((dim,) if dim else ())
        base = name.removesuffix("_rel")
        description, units = DESCRIPTIONS[base]
        if name != base:
            description += ", at beta = rho * Lambda of the row"
        if not dim:  # a per-row scalar: the fits read these whole, so few chunks of every n
            array = array.rechunk(_scalar_chunks(array.shape))
        variables[name] = (dims, array, {"description": description, "units": units})
    stats = xr.Dataset(variables, coords=coords)
    for name, var in scores.data_vars.items():
        if "key" not in var.dims:
            stats[name] = var

    whole_rows = stats[list(AGGREGATED) + ["ties"]].chunk(row=-1)
    for name in AGGREGATED:
        stats[f"{name}_quantiles"] = row_quantiles(whole_rows[name], quantiles).assign_attrs(
            description=f"quantiles over rows of {name}: {DESCRIPTIONS[name][0]}", units=DESCRIPTIONS[name][1]
        )
    stats["tied_rows"] = (whole_rows["ties"] >= 2).sum("row").assign_attrs(
        description="rows with a tie at the maximum (Lambda = inf)", units="count"
    )
    stats.attrs = dict(scores.attrs)
    stats.attrs["statistics_exclude_first_keys"] = int(exclude_first_keys)
    if exclude_first_keys and "model" in scores.attrs:  # the sink variant is a source of its own
        stats.attrs["source"] = model_source_name(scores.attrs["model"], scores.attrs["corpus"], int(exclude_first_keys))
    stats.attrs["grids"] = json.dumps({k: getattr(grids, k).tolist() for k in ("t", "resolutions", "beta", "rho")})
    return stats


def _scalar_chunks(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Chunks of a ``(unit, n, row)`` variable: all lengths and rows, as many units as fit in
    :data:`_WRITE_ELEMENTS` values (a SmolLM2 store: one chunk instead of 408 of 4 heads)."""
    units, lengths, rows = shape
    return (int(np.clip(_WRITE_ELEMENTS // max(lengths * rows, 1), 1, units)), lengths, rows)


@contextmanager
def dask_scheduler(spec: str, workers: int):
    """Keyword arguments for ``dask.compute`` for a scheduler setting.

    ``threads`` (default) and ``processes`` run locally with ``workers`` workers; ``synchronous``
    runs in this thread; an address such as ``tcp://host:8786`` uses an existing
    ``dask.distributed`` scheduler, so the heavy stage can run on a cluster.
    """
    if spec in ("threads", "processes"):
        yield {"scheduler": spec, "num_workers": max(1, int(workers))}
    elif spec == "synchronous":
        yield {"scheduler": "synchronous"}
    elif "://" in spec:
        from distributed import Client

        with Client(spec) as client:
            yield {"scheduler": client}
    else:
        raise ValueError(
            f"dask scheduler {spec!r} not understood: use 'threads', 'processes', 'synchronous' "
            "or the address of a dask.distributed scheduler (e.g. 'tcp://host:8786')"
        )


def _block_prefixes(prefixes, block: str = _BLOCK_PREFIX) -> set:
    """The task prefixes that count statistics blocks: those that start with ``block`` when there
    are any (a length of one block leaves the block task unfused, and its read is then named
    ``getitem-xarray-statsblock``), else those that contain it (blocks fused with the read before
    them and the stack after them, ``getitem-statsblock-xarray-stack``)."""
    named = {prefix for prefix in prefixes if block in prefix.split("-")}
    first = {prefix for prefix in named if prefix.split("-")[0] == block}
    return first or named


class _Progress:
    """Logs how many statistics blocks are done, at most every ``interval`` seconds."""

    def __init__(self, interval: float):
        self.interval = interval
        self.last = time.monotonic()

    def report(self, done: int, total: int, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last >= self.interval:
            self.last = now
            log.info("statistics: %d of %d blocks done", done, total)


class _LocalProgress(Callback):
    """Block progress on the local schedulers (threads, processes, synchronous)."""

    def __init__(self, interval: float):
        super().__init__()
        self.progress = _Progress(interval)
        self.done = self.total = 0
        self.blocks: set = set()

    def _start_state(self, dsk, state):
        prefixes = [key_split(key) for key in dsk]
        self.blocks = _block_prefixes(set(prefixes))
        self.total = sum(prefix in self.blocks for prefix in prefixes)

    def _posttask(self, key, result, dsk, state, worker_id):
        if key_split(key) in self.blocks:
            self.done += 1
            self.progress.report(self.done, self.total)

    def _finish(self, dsk, state, errored):
        self.progress.report(self.done, self.total, final=True)


def _scheduler_block_counts(client) -> dict:
    """Task prefix -> (done, total) of the prefixes that name statistics blocks, as a
    ``distributed`` scheduler has seen them over its lifetime."""

    # Nested, so that it is pickled by value: the scheduler need not have critscale installed.
    def counts(dask_scheduler, block=_BLOCK_PREFIX):
        finished = ("memory", "released", "forgotten", "erred")
        return {name: (sum(prefix.states.get(s, 0) for s in finished), sum(prefix.states.values()))
                for name, prefix in dask_scheduler.task_prefixes.items() if block in name.split("-")}

    return {name: np.array(pair) for name, pair in client.run_on_scheduler(counts).items()}


def run_with_progress(work, spec: str, workers: int) -> None:
    """Compute ``work`` on the scheduler ``spec`` (see :func:`dask_scheduler`), logging blocks done
    every :data:`PROGRESS_INTERVAL` seconds and at the end."""
    interval = PROGRESS_INTERVAL
    with dask_scheduler(spec, workers) as kwargs:
        client = kwargs["scheduler"]
        if isinstance(client, str):
            with _LocalProgress(interval):
                dask.compute(work, **kwargs)
            return
        from distributed import wait

        progress = _Progress(interval)
        before = _scheduler_block_counts(client)  # blocks of earlier computations

        def report(final=False):
            now = _scheduler_block_counts(client)
            blocks = _block_prefixes(now)
            progress.report(*sum((now[name] - before.get(name, 0) for name in blocks), np.zeros(2, int)), final=final)

        future = client.compute(work)
        while True:
            try:
                wait(future, timeout=max(interval, 0.1))
                break
            except TimeoutError:
                report()
        future.result()  # raises the task's error, if any
        report(final=True)


def compute_statistics_store(
    scores_path,
    out_path,
    grids: Grids,
    *,
    quantiles=(0.1, 0.25, 0.5, 0.75, 0.9),
    row_chunk: int = 256,
    scheduler: str = "threads",
    workers: int = 1,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    exclude_first_keys: int = 0,
    block_elements: int = BLOCK_ELEMENTS,
    config: dict | None = None,
) -> None:
    """Read a score store, compute its statistics with Dask, write the statistics store."""
    # The input's checksum reads every file of the store (0.05 s for 2^24 scores, 0.7 s for a
    # SmolLM2 store): a thread hashes while the graph is built and the blocks start, since hashing
    # releases the GIL; only the metadata's thread waits for it, to write it in the provenance.
    with ThreadPoolExecutor(max_workers=1) as hashing:
        scores_checksum = hashing.submit(storage.store_checksum, scores_path)
        scores = storage.open_store(scores_path, chunks=None)
        stats = gap_statistics(
            scores, grids, quantiles=quantiles, row_chunk=row_chunk, memory_budget=memory_budget,
            exclude_first_keys=exclude_first_keys, block_elements=block_elements,
        )

        def provenance() -> dict:
            return {"statistics_provenance": storage.provenance(
                config or {},
                scores_store=str(scores_path),
                scores_checksum=scores_checksum.result(),
                scores_provenance=scores.attrs.get("provenance"),
                exclude_first_keys=int(exclude_first_keys),
            )}

        write = storage.write_dataset(stats, out_path, compute=False, late_attrs=provenance)
        run_with_progress(write, scheduler, workers)
