"""The extraction driver: exact pre-softmax attention rows of real transformers, streamed into the
canonical score store.

Model sources and loading are in :mod:`critscale.model_loading`, the registered attention function
and the self-check in :mod:`critscale.capture`.

Which rows
----------
For a causal model one forward pass over a window of the longest ``n`` gives, for every ``n`` on
the ladder, the row of the query at position ``n - 1 - o`` over keys ``0..n-1`` (``o`` in
``0..queries-1``; keys the query cannot see are NaN).  Causality makes that row identical to the
row of a forward pass over the first ``n`` tokens.  For a bidirectional encoder the row of query
``n-1`` sees the whole window, so one forward per ``n`` on the first ``n`` tokens is run.

Memory
------
Only the captured query rows are computed (never an ``n x n`` matrix); they are buffered per store
row chunk (:mod:`critscale.score_writer`, bounded by ``write_buffer_bytes``) and each chunk is
written once by a background thread, so neither the number of layers nor of windows grows memory.
Arrays of 4 MiB and more get pages of their own (:func:`fixed_mmap_threshold`), which are returned
when freed: glibc's sliding threshold otherwise moves them to the heap after the first frees, whose
free space the next forward's differently sized arrays reuse badly (SmolLM2, 4 windows of 8192
tokens: 3.49 GB peak, 2.65 GB with the fixed threshold).

Exactness
---------
Every window is checked by :func:`critscale.capture.self_check` at the rows
:func:`critscale.capture.check_positions` names (the first window at every ``n``); the capture
error and the SDPA drift are recorded in the store.
"""

from __future__ import annotations

import ctypes
import inspect
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .capture import capturing, check_positions, layer_modules, probe_layers, self_check
from .study import model_source_name
from .model_loading import attention_layout, load_model, validate_model_spec
from .model_sources import ModelSpecError, max_positions
from .score_writer import RowChunkWriter, choose_row_chunk
from .storage import create_scores_store, provenance

WRITE_BUFFER_BYTES = 256 * 2**20  # captured rows buffered per store row chunk (see critscale.score_writer)
MMAP_THRESHOLD_BYTES = 4 * 2**20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def fixed_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Allocations of ``nbytes`` and more are mapped on their own and unmapped when freed, for the
    rest of the process (glibc's ``mallopt``; a fixed threshold also stops it sliding).  Returns
    False where the C library has no ``mallopt`` (not glibc), which changes nothing else."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's own C library
    return bool(mallopt and mallopt(_M_MMAP_THRESHOLD, int(nbytes)) == 1)


class _StopForward(Exception):
    """Raised after the last captured layer: the rest of the forward pass is not needed."""


def _decoder_layers(model):
    """The model's stack of transformer blocks (the ModuleList holding one module per hidden layer),
    or None when there is no such list."""
    from torch import nn

    n_layers = int(model.config.num_hidden_layers)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    return None


@contextmanager
def _forward_stops_after(model, layer: int):
    """Within the block a forward pass of ``model`` raises :class:`_StopForward` once block ``layer``
    has run (nothing after it, final norm included, is computed); without a block list it runs whole."""
    blocks = _decoder_layers(model)
    if blocks is None:
        yield
        return

    def stop(module, args, output):
        raise _StopForward

    handle = blocks[layer].register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def _run_forward(model, input_ids, last_layer: int) -> None:
    """Forward ``input_ids`` through blocks ``0..last_layer`` only (no cache, no LM head)."""
    # a cache would keep every layer's keys and values alive for nothing
    no_cache = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    with _forward_stops_after(model, last_layer):
        try:
            model(input_ids=input_ids, **no_cache)
        except _StopForward:
            pass


def _put_rows(writer: RowChunkWriter, rows: np.ndarray, unit0: int, n_indices, row0: int, queries: int) -> None:
    """Hand the writer one layer's captured rows ``(B, H, len(n_indices) * queries, K)`` of one
    forward, as ``(H, B * queries, n)`` per ``n`` (rows ordered window-major, then query)."""
    batch, heads = rows.shape[:2]
    for j, n_index in enumerate(n_indices):
        n = writer.n_ladder[n_index]
        values = rows[:, :, j * queries:(j + 1) * queries, :n].transpose(1, 0, 2, 3).reshape(heads, batch * queries, -1)
        writer.put(values, unit0=unit0, n_index=n_index, row0=row0)


def capture_forward(model, writer: RowChunkWriter, input_ids, positions, n_indices, *, row0: int, queries: int,
                    layer_units: dict, heads=None, mode: str = "sdpa", modules=None, keep=()) -> dict:
    """One forward of ``input_ids`` through the captured layers (``layer_units``: layer -> its first
    unit): the rows of the query ``positions`` go to ``writer`` from store row ``row0`` on, at the
    ladder's ``n_indices``.  Returns each layer's captured rows ``(B, H, len(keep), K)`` at the
    positions ``keep`` (a subset of ``positions``, for the self-check)."""
    import torch

    kept = {}
    # Copies of the checked rows only: keeping every captured row of a first window at n = 8192
    # (8 queries x 8 lengths x 9 heads x 30 layers of 8192 keys) held 0.57 GB through the self-check.
    wanted = torch.as_tensor([list(positions).index(p) for p in keep], dtype=torch.long)

    def sink(layer, rows, _probabilities):
        if len(wanted):
            kept[layer] = rows.index_select(2, wanted.to(rows.device))
        _put_rows(writer, rows.cpu().numpy(), layer_units[layer], n_indices, row0, queries)

    layers = sorted(layer_units)
    with capturing(model, positions, sink, layers=layers, heads=heads, mode=mode, modules=modules):
        _run_forward(model, input_ids, layers[-1])
    return kept


def _progress(windows: int, tokens_per_window: int, *, enabled: bool):
    """tqdm progress in tokens (rate and time left) with windows done as postfix, on stderr (a
    Snakemake rule's log, see :mod:`critscale.runlog`), refreshed at most every 10 s."""
    import sys

    from tqdm import tqdm

    return tqdm(total=windows * tokens_per_window, unit="tok", unit_scale=True, desc="extraction", file=sys.stderr,
                mininterval=10.0, ascii=True, disable=not enabled, postfix=f"windows 0/{windows}")


def _unit_coords(model, layer_list, head_list) -> dict:
    """Per-unit ``layer``, ``head``, and each layer's attention: ``layer_type`` (sliding_attention or
    full_attention) and ``window`` (0 for a global layer), as the model hands them to its attention."""
    windows = probe_layers(model)
    per_layer = [windows[layer] or 0 for layer in layer_list]
    repeat = len(head_list)
    return {
        "layer": np.repeat(layer_list, repeat),
        "head": np.tile(head_list, len(layer_list)),
        "layer_type": np.repeat(["sliding_attention" if w else "full_attention" for w in per_layer], repeat),
        "window": np.repeat(np.asarray(per_layer, dtype=np.int64), repeat),
    }


def extract_to_store(
    model_spec: dict,
    corpus_spec: dict,
    out_path,
    n_ladder,
    sequences: int,
    queries: int = 1,
    layers=None,
    heads=None,
    seed: int = 0,
    dtype: str = "float32",
    *,
    batch_size: int = 1,
    attention_output: str = "sdpa",
    device: str = "auto",
    model_name: str | None = None,
    corpus_name: str | None = None,
    threads: int | None = None,
    loaded=None,
    texts=None,
    log=print,
    progress: bool = True,
    write_buffer_bytes: int = WRITE_BUFFER_BYTES,
) -> dict:
    """Extract the rows of ``sequences`` windows of the corpus into a canonical score store.

    Units are ``L{layer}H{head}`` (coords ``layer``, ``head``); rows are ``sequence x query``
    (coords ``sequence``, ``query``, and ``window``: the window index in the corpus stream).
    ``loaded=(model, tokenizer, info)`` and ``texts=(texts, corpus_info)`` reuse what is already
    in memory (tests, benchmarks).  Every key is written (masking attention sinks is a choice of
    the statistics stage).  Captured rows of one store row chunk (at most ``write_buffer_bytes``,
    and never less than one forward's rows) are buffered and written once, by a background thread
    while the next forward runs; the forward stops after the last captured layer.  ``progress``
    shows windows done, tokens per second and the time left (tqdm, on stderr: the rule's log).
    Returns a summary dict (timings, self-check errors).
    """
    import torch

    from . import corpora

    t_start = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    fixed_mmap_threshold()
    request = _Request.checked(n_ladder, sequences, queries, batch_size, attention_output, layers, heads, seed, dtype)
    model = _LoadedModel.of(model_spec, loaded, request, device)
    units = _Units.chosen(model.model.config, layers, heads)
    corpus_texts, corpus_info = corpora.load_corpus(corpus_spec) if texts is None else texts
    windows, window_info = corpora.token_windows(
        model.tokenizer, corpus_texts, request.n_ladder[-1], request.sequences, seed, return_info=True
    )
    attrs = _store_attrs(model, corpus_info, request, model_name=model_name, corpus_name=corpus_name)
    attrs["provenance"] = provenance(
        request.settings(model_spec, corpus_spec, device=str(next(model.model.parameters()).device)),
        model_info=model.info, corpus={k: v for k, v in corpus_info.items() if k != "files"},
        corpus_files=corpus_info.get("files", []), windows=window_info,
    )
    _create_store(out_path, model.model, request, units, window_info, attrs, write_buffer_bytes)
    run = _capture_windows(model, windows, request, units, out_path, progress)
    check = _record_self_check(out_path, run.checks)
    summary = {
        "path": str(out_path), "units": len(units.names), "rows": request.rows, "n_ladder": request.n_ladder,
        "self_check": check, "forward_seconds": run.forward_seconds,
        "self_check_seconds": run.check_seconds, "total_seconds": time.perf_counter() - t_start,
        # forwards, captures and writes (the writer thread's tail included), without the self-check
        "extract_seconds": run.loop_seconds - run.check_seconds, "write_wait_seconds": run.write_wait_seconds,
        "blocks_written": run.blocks_written,
    }
    if log:
        log(
            f"[critscale] {attrs['model']} on {attrs['corpus']}: {request.sequences} sequences x "
            f"{len(request.n_ladder)} lengths, {len(units.names)} units, self-check capture "
            f"{check['capture_error']:.2e} drift {check['drift_error']:.2e}, {summary['total_seconds']:.1f}s"
        )
    return summary


@dataclass(frozen=True)
class _Request:
    """The validated arguments of one extraction that shape its store (``layers`` and ``heads``
    as given, for the provenance)."""

    n_ladder: list[int]
    sequences: int
    queries: int
    batch_size: int
    attention_output: str
    layers: object
    heads: object
    seed: int
    dtype: str

    @classmethod
    def checked(cls, n_ladder, sequences, queries, batch_size, attention_output, layers, heads, seed, dtype):
        n_ladder = sorted(int(n) for n in n_ladder)
        if len(set(n_ladder)) != len(n_ladder) or n_ladder[0] < 1:
            raise ValueError(f"n_ladder must hold distinct positive lengths, got {n_ladder}")
        queries, sequences, batch_size = int(queries), int(sequences), int(batch_size)
        if queries < 1 or queries > n_ladder[0]:
            raise ValueError(f"queries must be in 1..{n_ladder[0]} (the shortest n), got {queries}")
        if sequences < 1 or batch_size < 1:
            raise ValueError(f"sequences ({sequences}) and batch_size ({batch_size}) must be positive")
        if attention_output not in ("eager", "sdpa"):
            raise ValueError("attention_output must be 'eager' or 'sdpa'")
        return cls(n_ladder, sequences, queries, batch_size, attention_output, layers, heads, seed, dtype)

    @property
    def rows(self) -> int:
        """Store rows: ``sequences x queries``."""
        return self.sequences * self.queries

    def settings(self, model_spec: dict, corpus_spec: dict, device: str) -> dict:
        """The extraction's settings as its provenance records them."""
        return {
            "model": model_spec, "corpus": corpus_spec, "n_ladder": self.n_ladder, "sequences": self.sequences,
            "queries": self.queries, "layers": self.layers, "heads": self.heads, "seed": self.seed,
            "dtype": self.dtype, "batch_size": self.batch_size, "attention_output": self.attention_output,
            "device": device,
        }


@dataclass(frozen=True)
class _LoadedModel:
    """The model with what the extraction reads of it: causal or bidirectional, its attention modules."""

    model: object
    tokenizer: object
    info: dict
    direction: str
    modules: object

    @classmethod
    def of(cls, model_spec: dict, loaded, request: _Request, device: str) -> _LoadedModel:
        """``loaded`` or the model of ``model_spec``, refused when the longest ``n`` exceeds its positions."""
        if loaded is None:
            validate_model_spec(model_spec, request.n_ladder[-1])
            loaded = load_model(model_spec, dtype=request.dtype, device=device)
        model, tokenizer, info = loaded
        direction = attention_layout(model).direction
        modules = layer_modules(model)
        max_pos = max_positions(model.config)
        if max_pos is not None and request.n_ladder[-1] > max_pos:
            raise ModelSpecError(f"context length {request.n_ladder[-1]} exceeds the model's {max_pos} positions")
        return cls(model, tokenizer, info, direction, modules)

    @property
    def causal(self) -> bool:
        return self.direction == "causal"


@dataclass(frozen=True)
class _Units:
    """The captured heads: ``L{layer}H{head}`` for every chosen layer and head."""

    layers: list[int]
    heads: list[int]
    #: heads handed to the capture: None when every head is captured
    captured_heads: list[int] | None

    @classmethod
    def chosen(cls, config, layers, heads) -> _Units:
        n_layers, n_heads = int(config.num_hidden_layers), int(config.num_attention_heads)
        layer_list = list(range(n_layers)) if layers is None else sorted(int(x) for x in layers)
        head_list = list(range(n_heads)) if heads is None else sorted(int(x) for x in heads)
        if not layer_list or layer_list[0] < 0 or layer_list[-1] >= n_layers:
            raise ValueError(f"layers must lie in 0..{n_layers - 1}, got {layers}")
        if not head_list or head_list[0] < 0 or head_list[-1] >= n_heads:
            raise ValueError(f"heads must lie in 0..{n_heads - 1}, got {heads}")
        return cls(layer_list, head_list, None if heads is None else head_list)

    @property
    def names(self) -> list[str]:
        return [f"L{l}H{h}" for l in self.layers for h in self.heads]

    @property
    def first_of_layer(self) -> dict[int, int]:
        """Layer -> index of its first unit."""
        return {l: i * len(self.heads) for i, l in enumerate(self.layers)}


def _store_attrs(model: _LoadedModel, corpus_info: dict, request: _Request, *, model_name, corpus_name) -> dict:
    """The score store's attributes: where the rows come from and how they were captured."""
    import torch
    import transformers

    info = model.info
    model_label = model_name or str(info.get("model_id"))
    corpus_label = corpus_name or corpus_info["source"]
    return {
        "source": model_source_name(model_label, corpus_label),
        "kind": "model",
        "model": model_label,
        "model_id": str(info.get("model_id")),
        "revision": str(info.get("revision") or ""),
        "weight_checksum": str(info.get("weight_checksum") or ""),
        "architecture": model.model.config.model_type,
        "direction": model.direction,
        "tokenizer": info.get("tokenizer", ""),
        "dtype": request.dtype,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "corpus": corpus_label,
        "corpus_source": corpus_info["source"],
        "corpus_files": list(corpus_info.get("files", [])),
        "corpus_checksum": corpus_info["checksum"],
        "queries": request.queries,
        "seed": int(request.seed),
        "attention_output": request.attention_output,
    }


def _create_store(out_path, model, request: _Request, units: _Units, window_info: dict, attrs: dict,
                  write_buffer_bytes: int) -> None:
    """The empty score store, rows ordered window-major then query, chunked to fit the write buffer."""
    row_sequence = np.repeat(np.arange(request.sequences), request.queries)
    row_query = np.tile(np.arange(request.queries), request.sequences)
    create_scores_store(
        out_path, units=units.names, n_ladder=request.n_ladder, sequence=row_sequence, query=row_query,
        unit_coords=_unit_coords(model, units.layers, units.heads),
        row_coords={"window": np.repeat(np.asarray(window_info["window_index"]), request.queries)},
        attrs=attrs, dtype="float32",
        row_chunk=choose_row_chunk(request.rows, request.batch_size * request.queries, len(units.names),
                                   request.n_ladder, write_buffer_bytes),
    )


def _forward_plans(causal: bool, n_ladder: list[int], queries: int) -> list[tuple]:
    """``(input_length, query positions, ladder indices)`` of the forwards of one window: one over
    the longest ``n`` for a causal model, one per ``n`` for a bidirectional encoder."""
    offsets = np.arange(queries)
    if causal:
        return [(n_ladder[-1], [n - 1 - o for n in n_ladder for o in offsets], list(range(len(n_ladder))))]
    return [(n, [n - 1 - o for o in offsets], [i]) for i, n in enumerate(n_ladder)]


@dataclass(frozen=True)
class _CaptureRun:
    checks: list[dict]
    forward_seconds: float
    check_seconds: float
    loop_seconds: float
    write_wait_seconds: float
    blocks_written: int


def _capture_windows(model: _LoadedModel, windows, request: _Request, units: _Units, out_path,
                     progress: bool) -> _CaptureRun:
    """Every window through the forward plans in batches, its rows written to the store; the
    self-check runs at the rows :func:`critscale.capture.check_positions` names."""
    import torch

    plans = _forward_plans(model.causal, request.n_ladder, request.queries)
    checks = []
    t_forward = t_check = 0.0
    t_loop = time.perf_counter()
    device = next(model.model.parameters()).device
    with (
        _progress(request.sequences, sum(length for length, _, _ in plans), enabled=progress) as bar,
        RowChunkWriter(out_path) as writer,
        torch.inference_mode(),
    ):
        for b0 in range(0, request.sequences, request.batch_size):
            batch = windows[b0:b0 + request.batch_size].to(device)
            for length, positions, n_indices in plans:
                checked = check_positions(length, request.n_ladder, model.causal, first_window=b0 == 0)
                t0 = time.perf_counter()
                kept = capture_forward(model.model, writer, batch[:, :length], positions, n_indices,
                                       row0=b0 * request.queries, queries=request.queries,
                                       layer_units=units.first_of_layer, heads=units.captured_heads,
                                       mode=request.attention_output, modules=model.modules, keep=checked)
                t_forward += time.perf_counter() - t0
                if checked:
                    checks.append(self_check(model.model, batch[:, :length], kept, checked, checked,
                                             causal=model.causal, heads=units.captured_heads, modules=model.modules))
                    t_check += checks[-1]["seconds"]
                bar.update(len(batch) * length)
            bar.set_postfix_str(f"windows {min(b0 + request.batch_size, request.sequences)}/{request.sequences}",
                                refresh=False)
    return _CaptureRun(checks, t_forward, t_check, time.perf_counter() - t_loop, writer.wait_seconds,
                       writer.blocks_written)


def _record_self_check(out_path, checks: list[dict]) -> dict:
    """The worst capture and drift errors over every self-check, recorded in the store's attributes."""
    import zarr

    from .storage import consolidate

    check = {name: max(c[name] for c in checks) for name in ("capture_error", "drift_error")}
    check.update(capture_tol=checks[0]["capture_tol"], drift_tol=checks[0]["drift_tol"], rows=sum(c["rows"] for c in checks))
    group = zarr.open_group(str(out_path), mode="r+")
    group.attrs.update({f"self_check_{name}": value for name, value in check.items()})
    consolidate(out_path)
    return check
