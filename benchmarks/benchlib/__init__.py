"""Shared pieces of the benchmarks under `benchmarks/`.

A package (not a `benchmarks/*.py` file) so that `./dev bench`, which runs every
`benchmarks/*.py`, does not run it as a benchmark.

- `common`: progress lines, JSON output, child processes measured with wait4
  (wall time, CPU, peak RSS), percentiles, target bookkeeping.
- `stores`: generated stores, cached under the work directory and copied for
  each measured run.
- `workers`: the code that runs in measured child processes
  (`python -m benchlib.workers NAME ...`).
- `daemon`: `spanwatch run` as a child process: sd_notify socket, CPU and RSS.
"""
