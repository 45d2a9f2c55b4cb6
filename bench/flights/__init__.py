"""The parts of the flights feature benchmark; ``bench/features.py`` is its entry point.

One module per job: ``settings`` (paths and constants), ``data`` (the scaled project),
``mlprod_method`` / ``hand_sql`` / ``pandas_method`` (the three ways to build the matrix),
``measure`` (one run in a worker process), ``agreement`` (column by column comparison),
``query_profile`` (DuckDB operator profile), ``report`` (console summary and RESULTS.md) and
``benchmark`` (the run that ties them together).

Inside the package, modules import each other relatively, so it works however ``bench/`` came
to be on ``sys.path``.
"""
