"""Synthetic score families with known answers (``docs/theory.md``, "Synthetic families").

One module per job:

* :mod:`~critscale.families.base`: what a family is and what it answers for itself;
* :mod:`~critscale.families.catalog`: the families and their registry (:func:`~critscale.families.catalog.make_family`);
* :mod:`~critscale.families.spec`: a family's config entry and its sampling;
* :mod:`~critscale.families.rows`: rows of scores, seeded per row;
* :mod:`~critscale.families.predictions`: finite-``n`` predictions of per-row ``Lambda_n``;
* :mod:`~critscale.families.dataset`: the lazy score dataset of one family, predictions included.
"""
