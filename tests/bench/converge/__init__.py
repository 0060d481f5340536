"""Parts of the convergence benchmark (``python -m tests.bench.bench_converge``).

- :mod:`.promtext`: aimd's /metrics as numbers, and quantiles from histogram buckets.
- :mod:`.audit`: the test control plane with an audit log, which says who wrote what.
- :mod:`.standin`: the stand-in kubelet and the watches the benchmark waits on.
- :mod:`.floor`: the minimum writes, made by a plain script.
- :mod:`.flame`: py-spy's collapsed stacks as a top list and a flame graph.
- :mod:`.report`: the tables.
"""
