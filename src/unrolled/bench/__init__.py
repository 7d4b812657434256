"""The benchmark suite: unrolled against torch.nn on this machine (``unrolled bench``).

:mod:`~unrolled.bench.timing` measures, :mod:`~unrolled.bench.suite` holds the grid and runs it,
:mod:`~unrolled.bench.memory` measures peak memory in fresh processes, :mod:`~unrolled.bench.report`
renders the results (Markdown table, log-log scaling plot); the command is :mod:`unrolled.commands.bench`.
"""
