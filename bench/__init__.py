"""Offload's benchmarks: ``python3 dev.py bench`` (``python -m bench``) prints the table.

Every figure is a ratio against a baseline measured in the same run (the machine is
shared and noisy), as the median of several repetitions, each scenario on a Redis server
of its own. See README.md, "Performance".
"""
