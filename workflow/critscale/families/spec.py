"""A family's config entry ``{family, params, sampling}``: the family it names and how its rows
are sampled.

Two samplings:

* ``random``: every row is an independent draw, seeded per row with
  ``SeedSequence([seed, n, row])``, so scores never depend on chunking or the number of workers.
* ``quantile`` (i.i.d. families only): the deterministic row ``s_k = F^-1(1 - (k - 1/2)/m)``,
  ``k = 1..m``, identical for every row.  ``shrinking_gaps`` keeps its explicit maximum ``0`` and
  takes quantile values for its ``m = n - 1`` other scores.
"""

from __future__ import annotations

from critscale.families.base import ScoreFamily
from critscale.families.catalog import FAMILIES, IID_FAMILIES, make_family

SAMPLINGS = ("random", "quantile")


def check_sampling(family: ScoreFamily, sampling: str) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; allowed: {list(SAMPLINGS)}")
    if sampling == "quantile" and not family.iid:
        raise ValueError(
            f"sampling 'quantile' needs an i.i.d. family ({', '.join(IID_FAMILIES)}), not {family.name!r}"
        )


#: Keys of a family's config entry that the study (not the family) interprets.
STUDY_KEYS = ("rows", "ladder", "dtype")


def parse_spec(spec: dict) -> tuple[ScoreFamily, str]:
    """Family and sampling of a config entry ``{family, params, sampling}``.

    ``params`` defaults to ``{}`` and ``sampling`` to ``"random"``; the study keys
    :data:`STUDY_KEYS` are allowed and left to the caller; any other key is an error.
    """
    allowed = {"family", "params", "sampling", *STUDY_KEYS}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"family spec: unknown key {unknown[0]!r}; allowed: {sorted(allowed)}")
    if "family" not in spec:
        raise ValueError(f"family spec: key 'family' is required; allowed families: {sorted(FAMILIES)}")
    family = make_family(spec["family"], spec.get("params"))
    sampling = spec.get("sampling", "random")
    check_sampling(family, sampling)
    return family, sampling
