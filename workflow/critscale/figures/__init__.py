"""Figures of a study: gap counting, scale laws, the collapse, exponents, prescriptions.

Every figure function takes xarray / pandas inputs and returns a :class:`matplotlib.figure.Figure`
drawn on the Agg canvas (:mod:`~critscale.figures.canvas`, whose :func:`~critscale.figures.canvas.save`
writes it to disk).  One module per input:

* :mod:`~critscale.figures.per_source`: a statistics store (gap counting, scale against ``log n``,
  the collapse), with the units chosen by :mod:`~critscale.figures.selection`;
* :mod:`~critscale.figures.exponents`: the fit table (exponents, ``xi`` per head, law winners);
* :mod:`~critscale.figures.prescriptions`: the prescription tables (rule drift, operating points);
* :mod:`~critscale.figures.intervention`: the intervention's NLL curves;
* :mod:`~critscale.figures.tables`: any table, as an HTML page for the report.
"""
