"""Workloads of the sim benchmark (bench/sim.py), one module per engine.

Each engine module runs one (workload, size) in its own process and prints one JSON line:
`python -m peers.<module> --workload W1 --ticks 1000000 --cache DIR` run from the
repository root with `PYTHONPATH=.:bench` (the root first: bench/sim.py would shadow the
`sim` package; bench/sim.py sets this up). `common` holds what they share: the data
generator and cache, the order schedule, and the result line.
"""
