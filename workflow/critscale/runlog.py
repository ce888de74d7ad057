"""Send a Snakemake script's output and warnings to its rule's log file."""

import logging
import sys


def to_file(path) -> None:
    handle = open(path, "w", buffering=1)
    sys.stdout = sys.stderr = handle
    logging.basicConfig(stream=handle, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    logging.captureWarnings(True)
