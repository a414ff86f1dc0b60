"""The lab: experiments built from every layer below it (models, analysis, train, deploy).

- :mod:`lightnets.lab.guidelines`: ShuffleNet V2's four guidelines re-run on this machine
  (``lightnets guidelines``).
- :mod:`lightnets.lab.sweep`: accuracy against cost over a grid of widths, resolutions or group
  counts, each cell trained (``lightnets sweep``).
- :mod:`lightnets.lab.reproduce` re-runs the five papers' tables on this machine and writes one
  self-contained report (``lightnets reproduce``).
"""
