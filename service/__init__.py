"""The BentoML service: /sample, /logprob, model listing, artifact downloads, metrics.

Modules: ``config`` (limits, one typed settings object), ``store`` (the BentoML model store as
the model registry), ``schemas`` (request/response bodies), ``errors`` (status → HTTP mapping),
``batching`` (per-model micro-batcher), ``metrics`` (Prometheus series), ``middleware``
(body size, concurrency, catch-all), ``registry`` (loaded models), ``service`` (the thin
BentoML class), ``launch`` (a real server in a subprocess, the one launcher of the HTTP tests,
load tests and benchmarks). Depends on ``models`` and ``export``; ``loadtest`` and ``benchmarks``
use ``launch`` and ``batching``.
"""
