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

Exactness
---------
Every window is checked by :func:`critscale.capture.self_check` at the rows
:func:`critscale.capture.check_positions` names (the first window at every ``n``); the capture
error and the SDPA drift are recorded in the store.
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager

import numpy as np

from .capture import capturing, check_positions, layer_modules, probe_layers, self_check
from .study import model_source_name
from .model_loading import ModelSpecError, attention_layout, load_model, max_positions, validate_model_spec
from .score_writer import RowChunkWriter, choose_row_chunk
from .storage import create_scores_store, provenance

WRITE_BUFFER_BYTES = 256 * 2**20  # captured rows buffered per store row chunk (see critscale.score_writer)


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
                    layer_units: dict, heads=None, mode: str = "sdpa", modules=None, keep: bool = False) -> dict:
    """One forward of ``input_ids`` through the captured layers (``layer_units``: layer -> its first
    unit): the rows of the query ``positions`` go to ``writer`` from store row ``row0`` on, at the
    ladder's ``n_indices``.  Returns each layer's captured rows when ``keep`` (for the self-check)."""
    kept = {}

    def sink(layer, rows, _probabilities):
        if keep:
            kept[layer] = rows
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
    if loaded is None:
        validate_model_spec(model_spec, n_ladder[-1])
        loaded = load_model(model_spec, dtype=dtype, device=device)
    model, tokenizer, info = loaded
    config = model.config
    direction = attention_layout(model).direction
    modules = layer_modules(model)
    max_pos = max_positions(config)
    if max_pos is not None and n_ladder[-1] > max_pos:
        raise ModelSpecError(f"context length {n_ladder[-1]} exceeds the model's {max_pos} positions")
    n_layers, n_heads = int(config.num_hidden_layers), int(config.num_attention_heads)
    layer_list = list(range(n_layers)) if layers is None else sorted(int(x) for x in layers)
    head_list = list(range(n_heads)) if heads is None else sorted(int(x) for x in heads)
    if not layer_list or layer_list[0] < 0 or layer_list[-1] >= n_layers:
        raise ValueError(f"layers must lie in 0..{n_layers - 1}, got {layers}")
    if not head_list or head_list[0] < 0 or head_list[-1] >= n_heads:
        raise ValueError(f"heads must lie in 0..{n_heads - 1}, got {heads}")

    if texts is None:
        texts = corpora.load_corpus(corpus_spec)
    corpus_texts, corpus_info = texts
    windows, window_info = corpora.token_windows(
        tokenizer, corpus_texts, n_ladder[-1], sequences, seed, return_info=True
    )

    units = [f"L{l}H{h}" for l in layer_list for h in head_list]
    layer_units = {l: i * len(head_list) for i, l in enumerate(layer_list)}
    row_sequence = np.repeat(np.arange(sequences), queries)
    row_query = np.tile(np.arange(queries), sequences)
    attrs = {
        "source": model_source_name(model_name or str(info.get("model_id")), corpus_name or corpus_info["source"]),
        "kind": "model",
        "model": model_name or str(info.get("model_id")),
        "model_id": str(info.get("model_id")),
        "revision": str(info.get("revision") or ""),
        "weight_checksum": str(info.get("weight_checksum") or ""),
        "architecture": config.model_type,
        "direction": direction,
        "tokenizer": info.get("tokenizer", ""),
        "dtype": dtype,
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "corpus": corpus_name or corpus_info["source"],
        "corpus_source": corpus_info["source"],
        "corpus_files": list(corpus_info.get("files", [])),
        "corpus_checksum": corpus_info["checksum"],
        "queries": queries,
        "seed": int(seed),
        "attention_output": attention_output,
    }
    extraction_config = {
        "model": model_spec, "corpus": corpus_spec, "n_ladder": n_ladder, "sequences": sequences,
        "queries": queries, "layers": layers, "heads": heads, "seed": seed,
        "dtype": dtype, "batch_size": batch_size, "attention_output": attention_output,
        "device": str(next(model.parameters()).device),
    }
    attrs["provenance"] = provenance(
        extraction_config, model_info=info, corpus={k: v for k, v in corpus_info.items() if k != "files"},
        corpus_files=corpus_info.get("files", []), windows=window_info,
    )
    create_scores_store(
        out_path, units=units, n_ladder=n_ladder, sequence=row_sequence, query=row_query,
        unit_coords=_unit_coords(model, layer_list, head_list),
        row_coords={"window": np.repeat(np.asarray(window_info["window_index"]), queries)},
        attrs=attrs, dtype="float32",
        row_chunk=choose_row_chunk(len(row_sequence), batch_size * queries, len(units), n_ladder, write_buffer_bytes),
    )

    # forward plans: (input_length, positions, n_indices)
    offsets = np.arange(queries)
    if direction == "causal":
        plans = [(n_ladder[-1], [n - 1 - o for n in n_ladder for o in offsets], list(range(len(n_ladder))))]
    else:
        plans = [(n, [n - 1 - o for o in offsets], [i]) for i, n in enumerate(n_ladder)]

    checks = []
    t_forward = t_check = 0.0
    t_loop = time.perf_counter()
    device = next(model.parameters()).device
    selected_heads = None if heads is None else head_list
    with (
        _progress(sequences, sum(length for length, _, _ in plans), enabled=progress) as bar,
        RowChunkWriter(out_path) as writer,
        torch.inference_mode(),
    ):
        for b0 in range(0, sequences, batch_size):
            batch = windows[b0:b0 + batch_size].to(device)
            for length, positions, n_indices in plans:
                checked = check_positions(length, n_ladder, direction == "causal", first_window=b0 == 0)
                t0 = time.perf_counter()
                kept = capture_forward(model, writer, batch[:, :length], positions, n_indices, row0=b0 * queries,
                                       queries=queries, layer_units=layer_units, heads=selected_heads,
                                       mode=attention_output, modules=modules, keep=bool(checked))
                t_forward += time.perf_counter() - t0
                if checked:
                    checks.append(self_check(model, batch[:, :length], kept, positions, checked,
                                             causal=direction == "causal", heads=selected_heads, modules=modules))
                    t_check += checks[-1]["seconds"]
                bar.update(len(batch) * length)
            bar.set_postfix_str(f"windows {min(b0 + batch_size, sequences)}/{sequences}", refresh=False)
    t_loop = time.perf_counter() - t_loop
    check = {name: max(c[name] for c in checks) for name in ("capture_error", "drift_error")}
    check.update(capture_tol=checks[0]["capture_tol"], drift_tol=checks[0]["drift_tol"], rows=sum(c["rows"] for c in checks))
    # record the self-check in the store
    import zarr

    from .storage import consolidate

    group = zarr.open_group(str(out_path), mode="r+")
    group.attrs.update({f"self_check_{name}": value for name, value in check.items()})
    consolidate(out_path)
    summary = {
        "path": str(out_path), "units": len(units), "rows": len(row_sequence), "n_ladder": n_ladder,
        "self_check": check, "forward_seconds": t_forward,
        "self_check_seconds": t_check, "total_seconds": time.perf_counter() - t_start,
        # forwards, captures and writes (the writer thread's tail included), without the self-check
        "extract_seconds": t_loop - t_check, "write_wait_seconds": writer.wait_seconds,
        "blocks_written": writer.blocks_written,
    }
    if log:
        log(
            f"[critscale] {attrs['model']} on {attrs['corpus']}: {sequences} sequences x {len(n_ladder)} lengths, "
            f"{len(units)} units, self-check capture {check['capture_error']:.2e} drift {check['drift_error']:.2e}, "
            f"{summary['total_seconds']:.1f}s"
        )
    return summary
