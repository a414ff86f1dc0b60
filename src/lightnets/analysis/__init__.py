"""Complexity analysis: params, MACs, memory traffic, roofline.

``profile(model, input_size)`` runs one forward pass and returns a :class:`Profile` with one
:class:`LayerRecord` per executed operation; :mod:`lightnets.analysis.formulas` holds the
closed-form cost of each layer type; :mod:`~lightnets.analysis.timing` (latency statistics, on
a machine :mod:`~lightnets.analysis.machine` watches), :mod:`~lightnets.analysis.roofline` and
:mod:`~lightnets.analysis.compare` relate them to speed. Analysis imports models and data, never
training: the experiments that train (the guidelines, the sweep) are in :mod:`lightnets.lab`.
"""

from lightnets.analysis.counter import profile
from lightnets.analysis.report import CONVENTIONS, LayerRecord, Profile, TypeShare

__all__ = ["CONVENTIONS", "LayerRecord", "Profile", "TypeShare", "profile"]
