"""Load tests: served latency of the KirchhoffNet service beside the circuit's projected timing.

One module per job: ``plan`` (the scenario matrix), ``target`` (starting or checking the
server), ``locust_run`` (closed-loop steps in a separate locust process), ``openloop``
(a fixed-rate generator, also its own process), ``locust_csv`` and ``prom`` (parsing what
they produce), ``circuit`` (projected chip timing, ngspice confirmation, energy),
``machine`` (where things ran), ``runner`` (the orchestration), ``report`` and ``plots``
(what people read). ``locustfile.py`` runs only inside locust: never import it here,
because gevent monkey-patches the interpreter.
"""
