"""Hardware export: SPICE netlists, parameter tables, ONNX graphs, bundles, and circuit
simulation with ngspice. Depends on ``models``; nothing in ``models`` imports this."""
