"""The genre figure from the genre comparison's tables."""

import pandas as pd

from critscale import runlog
from critscale.figures.canvas import save
from critscale.figures.genres import genre_figure

runlog.to_file(snakemake.log[0])
heads, summary = pd.read_csv(snakemake.input.heads), pd.read_csv(snakemake.input.summary)
save(genre_figure(heads, summary), snakemake.output[0])
