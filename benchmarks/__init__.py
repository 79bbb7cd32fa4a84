"""Benchmarks: the published KirchhoffNet inference method against our engine (``knet bench``)."""
