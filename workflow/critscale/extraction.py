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
At most one layer's logits at the longest ``n`` (plus its softmax) exist at a time; captured rows
are buffered per forward pass and flushed to the Zarr store whenever the buffer would exceed the
size of one layer's logits, so neither the number of layers nor of sequences grows memory.

Exactness
---------
Every window is checked by :func:`critscale.capture.self_check` at the rows
:func:`critscale.capture.check_positions` names (the first window at every ``n``); the capture
error and the SDPA drift are recorded in the store.
"""

from __future__ import annotations

import time

import numpy as np

from .capture import capturing, check_positions, layer_modules, self_check
from .config import model_source_name
from .model_loading import ModelSpecError, attention_layout, load_model, max_positions, validate_model_spec
from .storage import create_scores_store, provenance, write_scores



class _StoreWriter:
    """Buffers captured rows per forward pass and streams them to the store."""

    def __init__(self, path, layer_units: dict, n_heads_sel: int, n_ladder, queries, exclude_first_keys, budget_bytes):
        self.path = path
        self.layer_units = layer_units  # layer -> first unit index
        self.h = n_heads_sel
        self.n_ladder = list(n_ladder)
        self.q = queries
        self.k = exclude_first_keys
        self.budget = budget_bytes
        self.buffer = []  # (layer, rows ndarray (B, H, P, K), n_indices, row0)
        self.nbytes = 0
        self.writes = 0
        self.seconds = 0.0

    def add(self, layer, rows: np.ndarray, n_indices, row0: int):
        if self.buffer and self.nbytes + rows.nbytes > self.budget:
            self.flush()
        self.buffer.append((layer, rows, list(n_indices), row0))
        self.nbytes += rows.nbytes

    def flush(self):
        t0 = time.perf_counter()
        self._flush()
        self.seconds += time.perf_counter() - t0

    def _flush(self):
        # one dense block per n covering the buffered units and rows: one write per n
        if not self.buffer:
            return
        by_n = {}
        for layer, rows, n_indices, row0 in self.buffer:
            for j, n_index in enumerate(n_indices):
                by_n.setdefault(n_index, []).append((layer, rows[:, :, j * self.q:(j + 1) * self.q], row0))
        for n_index, pieces in sorted(by_n.items()):
            n = self.n_ladder[n_index]
            u0 = min(self.layer_units[layer] for layer, _, _ in pieces)
            u1 = max(self.layer_units[layer] for layer, _, _ in pieces) + self.h
            r0 = min(row0 for _, _, row0 in pieces)
            r1 = max(row0 + rows.shape[0] * self.q for _, rows, row0 in pieces)
            block = np.full((u1 - u0, r1 - r0, n), np.nan, dtype=np.float32)
            for layer, rows, row0 in pieces:  # rows: (B, H, q, K)
                batch = rows.shape[0]
                u = self.layer_units[layer] - u0
                values = rows[..., :n].transpose(1, 0, 2, 3).reshape(self.h, batch * self.q, -1)
                block[u:u + self.h, row0 - r0:row0 - r0 + batch * self.q, : values.shape[-1]] = values
            if self.k:
                block[..., : self.k] = np.nan
            write_scores(self.path, block, unit=slice(u0, u1), n_index=n_index, rows=slice(r0, r1))
            self.writes += 1
        self.buffer.clear()
        self.nbytes = 0


def extract_to_store(
    model_spec: dict,
    corpus_spec: dict,
    out_path,
    n_ladder,
    sequences: int,
    queries: int = 1,
    exclude_first_keys: int = 0,
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
) -> dict:
    """Extract the rows of ``sequences`` windows of the corpus into a canonical score store.

    Units are ``L{layer}H{head}`` (coords ``layer``, ``head``); rows are ``sequence x query``
    (coords ``sequence``, ``query``, and ``window``: the window index in the corpus stream).
    ``loaded=(model, tokenizer, info)`` and ``texts=(texts, corpus_info)`` reuse what is already
    in memory (tests, benchmarks).  Returns a summary dict (timings, self-check errors).
    """
    import torch

    from . import corpora

    t_start = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    n_ladder = sorted(int(n) for n in n_ladder)
    if len(set(n_ladder)) != len(n_ladder) or n_ladder[0] < 1:
        raise ValueError(f"n_ladder must hold distinct positive lengths, got {n_ladder}")
    queries, k_excl, sequences = int(queries), int(exclude_first_keys), int(sequences)
    if queries < 1 or queries > n_ladder[0]:
        raise ValueError(f"queries must be in 1..{n_ladder[0]} (the shortest n), got {queries}")
    if k_excl < 0 or k_excl >= n_ladder[0] - queries + 1:
        raise ValueError(f"exclude_first_keys={k_excl} would leave a row of the shortest n without keys")
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
        "source": model_source_name(
            model_name or str(info.get("model_id")), corpus_name or corpus_info["source"], k_excl
        ),
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
        "exclude_first_keys": k_excl,
        "seed": int(seed),
        "attention_output": attention_output,
    }
    extraction_config = {
        "model": model_spec, "corpus": corpus_spec, "n_ladder": n_ladder, "sequences": sequences,
        "queries": queries, "exclude_first_keys": k_excl, "layers": layers, "heads": heads, "seed": seed,
        "dtype": dtype, "batch_size": batch_size, "attention_output": attention_output,
        "device": str(next(model.parameters()).device),
    }
    attrs["provenance"] = provenance(
        extraction_config, model_info=info, corpus={k: v for k, v in corpus_info.items() if k != "files"},
        corpus_files=corpus_info.get("files", []), windows=window_info,
    )
    create_scores_store(
        out_path, units=units, n_ladder=n_ladder, sequence=row_sequence, query=row_query,
        unit_coords={"layer": np.repeat(layer_list, len(head_list)), "head": np.tile(head_list, len(layer_list))},
        row_coords={"window": np.repeat(np.asarray(window_info["window_index"]), queries)},
        attrs=attrs, dtype="float32",
    )
    one_layer = batch_size * n_heads * n_ladder[-1] ** 2 * 4
    writer = _StoreWriter(out_path, layer_units, len(head_list), n_ladder, queries, k_excl, budget_bytes=one_layer)

    # forward plans: (input_length, positions, n_indices)
    offsets = np.arange(queries)
    if direction == "causal":
        plans = [(n_ladder[-1], [n - 1 - o for n in n_ladder for o in offsets], list(range(len(n_ladder))))]
    else:
        plans = [(n, [n - 1 - o for o in offsets], [i]) for i, n in enumerate(n_ladder)]

    checks = []
    t_forward = t_check = 0.0
    device = next(model.parameters()).device
    selected_heads = None if heads is None else head_list
    with torch.inference_mode():
        for b0 in range(0, sequences, batch_size):
            batch = windows[b0:b0 + batch_size].to(device)
            for length, positions, n_indices in plans:
                checked = check_positions(length, n_ladder, direction == "causal", first_window=b0 == 0)
                kept = {}

                def sink(layer, rows, _probabilities, _n=n_indices, _row0=b0 * queries, _kept=kept):
                    if checked:
                        _kept[layer] = rows
                    writer.add(layer, rows.cpu().numpy(), _n, _row0)

                t0 = time.perf_counter()
                with capturing(model, positions, sink, layers=layer_list, heads=selected_heads, mode=attention_output, modules=modules):
                    model(input_ids=batch[:, :length])
                t_forward += time.perf_counter() - t0
                if checked:
                    checks.append(self_check(model, batch[:, :length], kept, positions, checked,
                                             causal=direction == "causal", heads=selected_heads, modules=modules))
                    t_check += checks[-1]["seconds"]
                if direction == "bidirectional":
                    writer.flush()
        writer.flush()
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
        "self_check_seconds": t_check, "total_seconds": time.perf_counter() - t_start, "writes": writer.writes,
        "write_seconds": writer.seconds,
    }
    if log:
        log(
            f"[critscale] {attrs['model']} on {attrs['corpus']}: {sequences} sequences x {len(n_ladder)} lengths, "
            f"{len(units)} units, self-check capture {check['capture_error']:.2e} drift {check['drift_error']:.2e}, "
            f"{summary['total_seconds']:.1f}s"
        )
    return summary
