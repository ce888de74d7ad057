"""Bundle compressors compared on real statistics stores (how share.COMPRESSOR was chosen).

    python benchmarks/bench_share_codecs.py RESULTS_DIR [REPEATS]

Writes the per-row statistics (float32, as the ``rows`` level shares them) and the aggregates of
every statistics store under RESULTS_DIR/stats with each codec, in this one process on identical
in-memory inputs; prints the stored bytes and the median write and read times.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr
import zarr.codecs as codecs

from critscale import share, storage
from machine import describe, summary_line

CODECS = {
    "none": (),
    "zstd-1": (codecs.ZstdCodec(level=1),),
    "zstd-3": (codecs.ZstdCodec(level=3),),
    "zstd-9": (codecs.ZstdCodec(level=9),),
    "zstd-19": (codecs.ZstdCodec(level=19),),
    "blosc-lz4-shuffle": (codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),),
    "blosc-lz4-bitshuffle": (codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),),
    "blosc-zstd5-shuffle": (codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),),
    "blosc-zstd9-shuffle": (codecs.BloscCodec(cname="zstd", clevel=9, shuffle="shuffle"),),
}


def components(results: Path) -> list[xr.Dataset]:
    out = []
    for path in sorted((results / "stats").glob("*.zarr")):
        stats = storage.open_store(path)
        per_row = stats.drop_vars([n for n in stats.data_vars if n.endswith("_quantiles")])
        for ds in (share._shared_dtypes(per_row), share._shared_dtypes(share.aggregates(stats))):
            ds = ds.load()
            out.append(ds.chunk(share._chunks(ds)))
    return out


def write_all(datasets, directory: Path, compressors) -> None:
    for i, ds in enumerate(datasets):
        for var in ds.variables.values():
            var.encoding = {}
        encoding = {name: {"compressors": compressors} for name in ds.data_vars}
        with storage.quiet_consolidation():
            ds.to_zarr(directory / f"{i}.zarr", mode="w", zarr_format=3, encoding=encoding, consolidated=False)


def chunk_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file() and f.name != "zarr.json")


def main(results: Path, repeats: int) -> None:
    print(summary_line(describe()))
    datasets = components(results)
    print(f"{len(datasets)} datasets, {sum(ds.nbytes for ds in datasets) / 1e6:.2f} MB in memory")
    print(f"{'codec':22s} {'chunk bytes':>12s} {'write s':>8s} {'read s':>8s}")
    for name, compressors in CODECS.items():
        writes, reads = [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                write_all(datasets, Path(tmp), compressors)
                writes.append(time.perf_counter() - start)
                start = time.perf_counter()
                for i in range(len(datasets)):
                    xr.open_zarr(Path(tmp) / f"{i}.zarr", consolidated=False).load()
                reads.append(time.perf_counter() - start)
                size = chunk_bytes(Path(tmp))
        print(f"{name:22s} {size:12d} {np.median(writes):8.2f} {np.median(reads):8.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3)
