"""The feature-engine benchmark; ``bench/engines.py`` is its entry point.

One module per job: ``spark_sql`` and ``postgres_sql`` (the hand-written queries for those
engines; DuckDB's is ``flights.hand_sql``), ``projects`` (the flights project set up for each
engine, PostgreSQL tables loaded once per scale), ``worker`` (one measured build in a process
of its own), ``steps`` (where mlprod's time goes, grouped), ``report`` (console and the
RESULTS.md section) and ``run`` (the run that ties them together).
"""
