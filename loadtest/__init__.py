"""Load tests: served latency of the KirchhoffNet service beside the circuit's projected timing.

One module per job: ``session`` (one whole ``knet loadtest`` run: target, server, report),
``plan`` (the scenario matrix), ``runner`` (running the plan step by step), ``locust_run``
(closed-loop steps in a separate locust process, and reading its CSVs), ``openloop`` (a
fixed-rate generator, also its own process), ``prom`` (the service's ``/metrics``),
``circuit`` (projected chip timing and energy, the ``knet simulate`` confirmation),
``machine`` (where things ran, CPU pinning, GPU power), ``results`` (the typed rows and
result, number formatting), ``report`` and ``plots`` (what people read). The server itself
is started by ``service.launch``, the launcher the HTTP tests share. ``locustfile.py`` runs
only inside locust: never import it here, because gevent monkey-patches the interpreter.
"""
