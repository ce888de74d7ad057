# Does xi depend on the genre? Per model reading two or more corpora: per head, xi paired across
# each pair of its corpora, FDR-controlled over the model's tests, and the median shift
# (critscale.genres). In the default target only when some model reads two or more corpora.

#: The comparison's tables (tables/<name>.csv, report/<name>.html) and figure.
GENRE_TABLES = {"summary": "genres", "heads": "genre_heads"}
GENRE_FIGURE = "genres.png"


rule genres:
    input:
        stats=expand(result("stats", "{source}.zarr"), source=GENRE_SOURCES),
        fits=expand(result("fits", "{source}.csv"), source=GENRE_SOURCES),
    output:
        summary=result("tables", f"{GENRE_TABLES['summary']}.csv"),
        heads=result("tables", f"{GENRE_TABLES['heads']}.csv"),
    log:
        result("logs", "genres.log"),
    benchmark:
        result("benchmarks", "genres.tsv")
    conda:
        "../envs/critscale.yaml"
    threads: 1
    params:
        code=code_hash("../scripts/genres.py"),
        groups=canonical(GENRE_GROUPS),
        fitting=canonical(study_config.fit_settings(config)),
        seed=config["seed"],
    script:
        "../scripts/genres.py"


rule figures_genres:
    input:
        summary=rules.genres.output.summary,
        heads=rules.genres.output.heads,
    output:
        report(
            figure(GENRE_FIGURE),
            caption="../report/genres.rst",
            category="Genres",
            subcategory="xi by corpus",
            labels={"figure": "xi per head, corpus B against corpus A"},
        ),
    log:
        result("logs", "figures_genres.log"),
    benchmark:
        result("benchmarks", "figures_genres.tsv")
    conda:
        "../envs/critscale.yaml"
    params:
        code=code_hash("../scripts/figures_genres.py"),
    script:
        "../scripts/figures_genres.py"


rule genres_report_table:
    input:
        result("tables", "{table}.csv"),
    output:
        report(
            result("report", "{table}.html"),
            caption="../report/genres_table.rst",
            category="Genres",
            subcategory="Tables",
            labels={"table": "{table}"},
        ),
    log:
        result("logs", "report_table", "{table}.log"),
    wildcard_constraints:
        table="|".join(GENRE_TABLES.values()),
    conda:
        "../envs/critscale.yaml"
    params:
        code=code_hash("../scripts/figures_table.py"),
    script:
        "../scripts/figures_table.py"
