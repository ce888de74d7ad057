# Figures and report items. Every output is a report() item with a caption in workflow/report/;
# report sections: "Theory check", "Synthetic families", one per model x corpus, "Prescriptions".

# Sources that are not synthetic families are model x corpus sources (added by the model rules).
MODEL_SOURCES = [source for source in SOURCES if source not in FAMILIES]
SOURCE_FIGURES = ("gap_counting", "scale_vs_log_n", "collapse")
MODEL_FIGURES = ("xi_heatmap", "law_winners", "collapse_by_layer")
PRESCRIPTION_FIGURES = ("rule_drift", "operating_points")
REPORT_TABLES = (
    "fits",
    "theory_check",
    "theorem_violations",
    "headline",
    "rule_drift",
    "recommendations",
    "operating_points",
)
PRESCRIPTION_TABLES = ("rule_drift", "recommendations", "operating_points")


rule figures_source:
    input:
        stats=result("stats", "{source}.zarr"),
        fits=result("fits", "{source}.csv"),
    output:
        gap_counting=report(
            figure("{source}", "gap_counting.png"),
            caption="../report/gap_counting.rst",
            category=source_category,
            subcategory="{source}",
            labels={"source": "{source}", "figure": "gap counting N(t)"},
        ),
        scale_vs_log_n=report(
            figure("{source}", "scale_vs_log_n.png"),
            caption="../report/scale_vs_log_n.rst",
            category=source_category,
            subcategory="{source}",
            labels={"source": "{source}", "figure": "Lambda_n against log n"},
        ),
        collapse=report(
            figure("{source}", "collapse.png"),
            caption="../report/collapse.rst",
            category=source_category,
            subcategory="{source}",
            labels={"source": "{source}", "figure": "collapse against beta / Lambda"},
        ),
    log:
        result("logs", "figures_source", "{source}.log"),
    benchmark:
        result("benchmarks", "figures_source", "{source}.tsv")
    conda:
        "../envs/critscale.yaml"
    params:
        code=code_hash("../scripts/figures_source.py"),
    script:
        "../scripts/figures_source.py"


rule figures_overview:
    input:
        result("tables", "fits.csv"),
    output:
        report(
            figure("exponent_table.png"),
            caption="../report/exponent_table.rst",
            category="Theory check",
            subcategory="Exponents",
            labels={"figure": "fitted exponents of the synthetic families"},
        ),
    log:
        result("logs", "figures_overview.log"),
    conda:
        "../envs/critscale.yaml"
    params:
        code=code_hash("../scripts/figures_overview.py"),
    script:
        "../scripts/figures_overview.py"


rule figures_model:
    input:
        fits=result("fits", "{source}.csv"),
        stats=result("stats", "{source}.zarr"),
    output:
        xi_heatmap=report(
            figure("{source}", "xi_heatmap.png"),
            caption="../report/xi_heatmap.rst",
            category="{source}",
            subcategory="Exponents per head",
            labels={"source": "{source}", "figure": "xi per layer and head"},
        ),
        law_winners=report(
            figure("{source}", "law_winners.png"),
            caption="../report/law_winners.rst",
            category="{source}",
            subcategory="Exponents per head",
            labels={"source": "{source}", "figure": "held-out law winners"},
        ),
        collapse_by_layer=report(
            figure("{source}", "collapse_by_layer.png"),
            caption="../report/collapse_by_layer.rst",
            category="{source}",
            subcategory="Collapse per layer",
            labels={"source": "{source}", "figure": "collapse per layer, beta = 1 marked"},
        ),
    log:
        result("logs", "figures_model", "{source}.log"),
    benchmark:
        result("benchmarks", "figures_model", "{source}.tsv")
    conda:
        "../envs/critscale.yaml"
    params:
        code=code_hash("../scripts/figures_model.py"),
    script:
        "../scripts/figures_model.py"


rule figures_prescriptions:
    input:
        rule_drift=result("prescriptions", "{source}", "rule_drift.csv"),
        operating_points=result("prescriptions", "{source}", "operating_points.csv"),
    output:
        rule_drift=report(
            figure("{source}", "rule_drift.png"),
            caption="../report/rule_drift.rst",
            category="Prescriptions",
            subcategory="{source}",
            labels={"source": "{source}", "figure": "drift of each prescription"},
        ),
        operating_points=report(
            figure("{source}", "operating_points.png"),
            caption="../report/operating_points.rst",
            category="Prescriptions",
            subcategory="{source}",
            labels={"source": "{source}", "figure": "operating point of beta = 1"},
        ),
    log:
        result("logs", "figures_prescriptions", "{source}.log"),
    conda:
        "../envs/critscale.yaml"
    params:
        code=code_hash("../scripts/figures_prescriptions.py"),
    script:
        "../scripts/figures_prescriptions.py"


rule report_table:
    input:
        result("tables", "{table}.csv"),
    output:
        report(
            result("report", "{table}.html"),
            caption="../report/table.rst",
            category=lambda wildcards: "Prescriptions" if wildcards.table in PRESCRIPTION_TABLES else "Theory check",
            subcategory="Tables",
            labels={"table": "{table}"},
        ),
    log:
        result("logs", "report_table", "{table}.log"),
    wildcard_constraints:
        table="|".join(REPORT_TABLES),
    conda:
        "../envs/critscale.yaml"
    params:
        code=code_hash("../scripts/figures_table.py"),
    script:
        "../scripts/figures_table.py"
