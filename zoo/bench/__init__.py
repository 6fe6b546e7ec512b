"""Benchmarks that measure what zoo's initializations are worth (see :mod:`.transfer`).

Nothing is imported here: ``import zoo.bench`` stays torch-free.
"""
