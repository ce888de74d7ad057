# critscale: how softmax attention must be tempered as context grows.
# Score sources -> gap statistics (Dask, Zarr) -> exponent fits -> theory check, figures, report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/scores.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/statistics.smk"
include: "workflow/rules/fitting.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/prescriptions.smk"
include: "workflow/rules/schedules.smk"
include: "workflow/rules/intervention.smk"
include: "workflow/rules/share.smk"
include: "workflow/rules/genres.smk"


rule all:
    default_target: True
    input:
        all_targets(),
