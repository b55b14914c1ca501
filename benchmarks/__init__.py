"""The scale benchmark of ``ztctl reconcile``; run it with ``python -m benchmarks.run`` from the repo root.

It is kept out of the test suite because its timings depend on the machine.
``docs/benchmarks.md`` describes the command and the latest results.
"""
