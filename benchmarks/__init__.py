"""Benchmarks, each printing ratios measured side by side in one run (never asserted in tests).

| module | command | what |
| --- | --- | --- |
| ``bench`` | ``knet bench`` | the published inference method (``baseline``) against our engine, with accuracy |
| ``levers`` | ``knet bench-levers`` | each engine lever on its own, CPU time |
| ``batching`` | ``knet bench-batching`` | the service's micro-batcher on vs off over localhost HTTP |
| ``spice_scaling`` | ``knet bench-ngspice`` | ngspice's cost against circuit size (docs/export.md) |
| ``noise_ngspice`` | ``knet bench-noise`` | thermal noise in ngspice against the chip's SDE (``models.chip``) |
| ``soak`` (+ ``soak_report``) | ``knet soak`` | soak and fault run: 1 vs 2 workers, SIGKILL, SIGTERM |

The package installs with the project (``pip install .``), so the commands work from a
wheel or the Docker image; it depends on ``models``, ``service`` and ``export``, never on
``knet`` (the command line wraps it).
"""
