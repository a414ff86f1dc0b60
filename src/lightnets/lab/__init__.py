"""The lab: experiments built from every layer below it (models, analysis, train, deploy).

:mod:`lightnets.lab.reproduce` re-runs the five papers' tables on this machine and writes one
self-contained report (``lightnets reproduce``).
"""
