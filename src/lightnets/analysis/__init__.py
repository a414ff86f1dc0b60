"""Complexity analysis: params, MACs, memory traffic, roofline."""
