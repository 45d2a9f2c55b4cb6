"""The results, for people: the console table and the RESULTS.md section.

Only this benchmark's section of ``bench/RESULTS.md`` is written (``results_md.write_section``);
the numbers come from ``results.json``, so the section covers every scale measured so far.
"""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

from flights.report import machine
from flights.settings import ATOL, RTOL, console

from .steps import GROUPS, grouped

HEADING = "## Feature engines (bench/engines.py)"
ENGINE_ORDER = {"duckdb": 0, "spark": 1, "postgres": 2}
TARGET = 1.5


def _entries(results: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(
        results.values(),
        key=lambda e: (e["scale"], ENGINE_ORDER[e["engine"]], e.get("variant") or ""),
    )


def label_of(entry: dict[str, Any]) -> str:
    """The engine, and the setting that differs from its defaults, if any."""
    variant = entry.get("variant")
    return f"{entry['engine']} ({variant})" if variant else str(entry["engine"])


def _best(method: dict[str, Any]) -> dict[str, Any] | None:
    runs = method["runs"]
    return min(runs, key=lambda r: r["seconds"]) if runs else None


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _seconds(method: dict[str, Any]) -> str:
    best = _best(method)
    if best is None:
        return method.get("error") or "n/a"
    runs = len(method["runs"])
    return f"{best['seconds']:.2f}" + (f" (best of {runs})" if runs > 1 else "")


def _memory(method: dict[str, Any]) -> str:
    runs = method["runs"]
    if not runs:
        return "n/a"
    own = max(r["peak_rss_mb"] for r in runs)
    if any("jvm_peak_rss_mb" in r for r in runs):
        jvm = max(r.get("jvm_peak_rss_mb", 0.0) for r in runs)
        return f"{own + jvm:,.0f} MB ({own:,.0f} Python + {jvm:,.0f} JVM)"
    if any("server_peak_rss_mb" in r for r in runs):
        server = max(r.get("server_peak_rss_mb", 0.0) for r in runs)
        return f"{own:,.0f} MB client, {server:,.0f} MB server"
    return f"{own:,.0f} MB"


def cpu_of(run: dict[str, Any]) -> float:
    """CPU seconds of the engine's processes: the worker, its JVM, the PostgreSQL server."""
    return float(
        run["cpu_seconds"] + run.get("jvm_cpu_seconds", 0.0) + run.get("server_cpu_seconds", 0.0)
    )


def cpu_ratio(entry: dict[str, Any]) -> float | None:
    ours, hand = _best(entry["mlprod"]), _best(entry["sql"])
    if ours is None or hand is None:
        return None
    return cpu_of(ours) / cpu_of(hand)


def ratio(entry: dict[str, Any]) -> float | None:
    ours, hand = _best(entry["mlprod"]), _best(entry["sql"])
    if ours is None or hand is None:
        return None
    return float(ours["seconds"] / hand["seconds"])


def _agreement(entry: dict[str, Any]) -> str:
    agreement = entry["agreement"]
    if not agreement["checked"]:
        return "not checked"
    bad = agreement["bad"]
    return "all columns" if not bad else f"**{len(bad)} columns differ**"


def _rows(entry: dict[str, Any]) -> str:
    for method in ("mlprod", "sql"):
        best = _best(entry[method])
        if best:
            return f"{best['rows']:,}"
    return "n/a"


def results_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| scale | engine | rows | mlprod s | hand SQL s | mlprod / hand | mlprod / hand, CPU | "
        "peak RSS mlprod | peak RSS hand SQL | load (1 min) | agreement |",
        "|" + "---|" * 11,
    ]
    for e in _entries(results):
        lines.append(
            f"| {e['scale']}x | {label_of(e)} | {_rows(e)} | {_seconds(e['mlprod'])} | "
            f"{_seconds(e['sql'])} | {_fmt(ratio(e), 2, 'x')} | {_fmt(cpu_ratio(e), 2, 'x')} | "
            f"{_memory(e['mlprod'])} | "
            f"{_memory(e['sql'])} | {e['load'][0]:.1f} | {_agreement(e)} |"
        )
    return lines


def steps_table(results: dict[str, Any]) -> list[str]:
    """mlprod's best run per scale and engine, its steps grouped (seconds)."""
    entries = [e for e in _entries(results) if _best(e["mlprod"])]
    seen = [g for g in GROUPS if any(g in grouped(_best(e["mlprod"])["steps"]) for e in entries)]
    lines = [
        "| scale | engine | " + " | ".join(seen) + " | total |",
        "|" + "---|" * (len(seen) + 3),
    ]
    for e in entries:
        best = _best(e["mlprod"])
        groups = grouped(best["steps"])
        cells = [_fmt(groups.get(g), 2) if g in groups else "-" for g in seen]
        lines.append(
            f"| {e['scale']}x | {label_of(e)} | "
            + " | ".join(cells)
            + f" | {best['seconds']:.2f} |"
        )
    return lines


def handover_note(results: dict[str, Any]) -> list[str]:
    """Spark's hand-over is a step of its own in older mlprod, part of the first one since."""
    inside = [
        f"{e['scale']}x"
        for e in _entries(results)
        if e["engine"] == "spark"
        and (best := _best(e["mlprod"]))
        and not any(step["step"] == "sources to Spark" for step in best["steps"])
    ]
    if not inside:
        return []
    return [
        f"On Spark at {', '.join(inside)}, mlprod hands the sources over while reading and "
        "checking them (and runs the build's checks on Spark), so the hand-over is in the "
        "first column there.",
        "",
    ]


def hand_parts(results: dict[str, Any]) -> list[str]:
    lines = []
    for e in _entries(results):
        best = _best(e["sql"])
        if best is None:
            continue
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in best["timings"].items())
        lines.append(
            f"- {e['scale']}x {label_of(e)}: {best['seconds']:.2f} s"
            + (f" ({parts})" if parts else " (one query, not split)")
        )
    return lines


def _revisions(entry: dict[str, Any]) -> str:
    """The mlprod commit(s) an entry was measured at (inferred from the time if not kept)."""
    found = {r["revision"] for m in ("mlprod", "sql") for r in entry[m]["runs"] if "revision" in r}
    if not found and "revision" in entry:
        found = {entry["revision"]}
    if found:
        return ", ".join(sorted(found))
    end = datetime.strptime(entry["measured_at"], "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)
    spent = sum(r["seconds"] + 30.0 for m in ("mlprod", "sql") for r in entry[m]["runs"])
    start = end - timedelta(seconds=spent + 60.0)
    log = subprocess.run(
        ["git", "log", "--format=%h", f"--before={end.isoformat()}", "-1", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.split()
    during = subprocess.run(
        [
            "git",
            "log",
            "--format=%h",
            f"--after={start.isoformat()}",
            f"--before={end.isoformat()}",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    if len(during) > 0:
        return (
            f"a commit not kept; mlprod changed during these runs ({', '.join(reversed(during))})"
        )
    return f"{log[0] if log else '?'} (not kept; inferred from the time)"


def extra_details(results: dict[str, Any]) -> list[str]:
    lines = []
    for e in _entries(results):
        lines.append(
            f"- {e['scale']}x {label_of(e)}: measured until {e['measured_at']}, mlprod at "
            f"{_revisions(e)}"
        )
        for method, label in (("mlprod", "mlprod"), ("sql", "hand SQL")):
            best = _best(e[method])
            if best is None:
                continue
            parts = [f"worker CPU {best['cpu_seconds']:.1f} s"]
            if "jvm_cpu_seconds" in best:
                parts.append(f"JVM CPU {best['jvm_cpu_seconds']:.1f} s")
                parts.append(f"Spark session start {best['jvm_start_seconds']:.1f} s (not counted)")
            if "server_cpu_seconds" in best:
                parts.append(
                    f"server CPU {best['server_cpu_seconds']:.1f} s over "
                    f"{best['server_processes']} server process(es)"
                )
            lines.append(f"- {e['scale']}x {label_of(e)} {label}: " + "; ".join(parts))
        if e.get("postgres_load_seconds"):
            lines.append(
                f"- {e['scale']}x postgres: loading the four tables took "
                f"{e['postgres_load_seconds']:.1f} s (not counted)"
            )
    return lines


def _versions() -> str:
    import duckdb

    parts = [f"Python {platform.python_version()}", f"duckdb {duckdb.__version__}"]
    try:
        import pyspark

        parts.append(f"pyspark {pyspark.__version__}")
    except ImportError:
        pass
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    if java:
        parts.append(java.splitlines()[0].replace('"', ""))
    try:
        import adbc_driver_postgresql.dbapi as pg

        from .projects import POSTGRES_URL

        with pg.connect(POSTGRES_URL) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT current_setting('server_version')")
            parts.append(f"PostgreSQL {cursor.fetchall()[0][0]}")
    except Exception:  # the report is written even without the server
        pass
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    parts.append(f"mlprod git {revision or '?'}")
    return ", ".join(parts)


def render(results: dict[str, Any], quick: bool = False) -> str:
    from .interpret import interpret

    measured = sorted({e["measured_at"] for e in results.values()})
    lines = [
        HEADING,
        "",
        f"Generated by `bench/engines.py`{' --quick' if quick else ''}; measured "
        f"{measured[0]} to {measured[-1]}."
        if measured
        else "",
        "",
        f"- Machine: {machine()}; other work shared it: the 1-minute load average at the "
        "start of each engine's runs is in the table (2 cores: a load above 2 means the "
        "benchmark got less than the whole machine).",
        f"- Software: {_versions()}.",
        "- Data: the flights example (336,776 flights) and copies shifted by k x 364 days "
        "(`bench/flights/data.py`): 10x = 3.37M, 30x = 10.1M flights; planes and airports "
        "as they are.",
        "- Each build runs in a process of its own; times are wall-clock seconds of the build "
        "alone (no imports; Spark's session is started before the clock, for both methods), "
        "best of 2 alternating runs when the first took under 150 s. mlprod is "
        "`Project.load(folder).build_matrix(as_of=2100-01-01)` on a copy of the project whose "
        "`engine` names the engine; it reads and checks the sources itself (DuckDB) before "
        "running the plan on the engine. The hand SQL runs on the same data, the same engine, "
        "the same settings (Spark: mlprod's session defaults, `local[2]`, sources handed over "
        "from the DuckDB file through Arrow, matrix written as Parquet by Spark; PostgreSQL: "
        "the server's own settings, the same schema).",
        "- Peak RSS: DuckDB, the worker process; Spark, the worker plus its JVM (each one's "
        "peak, summed); PostgreSQL, the client process (the matrix arrives there) and the "
        "largest server process serving the build (sampled every 0.2 s; it counts the "
        "shared buffers it touched).",
        "- CPU: seconds of CPU of the engine's processes in the best run (DuckDB: the worker; "
        "Spark: the worker and the JVM; PostgreSQL: the worker and the server processes "
        "serving it); steadier than wall time when other work shares the machine.",
        f"- Agreement: every column of the hand-written matrix against mlprod's on the same "
        f"engine, sorted by `flight_id`: floats within {RTOL:g} relative (plus {ATOL:g}), "
        "NULLs in the same places, the rest equal.",
        "",
        *results_table(results),
        "",
        f"Target: mlprod within {TARGET}x of the hand-written SQL on each engine.",
        "",
    ]
    bad = [(e, line) for e in _entries(results) for line in e["agreement"]["bad"]]
    if bad:
        lines += ["### Disagreements", ""]
        lines += [f"- {e['scale']}x {label_of(e)}: {line}" for e, line in bad]
        lines.append("")
    lines += [
        "### Where the time goes",
        "",
        "mlprod, from `Matrix.steps` (its best run), seconds per group of steps: the sources "
        "read and checked by DuckDB and the plan compiled; handed over to Spark (Arrow); the "
        "spine; running totals and the other tables aggregates read (`__agg_*` that prepare); "
        "the as-of joins that read them and the weather (`__agg_*_probe_*`, `__asof_*`); "
        "levels (expressions, lookups); the result (Spark: written as Parquet; PostgreSQL: "
        "fetched as Arrow).",
        "",
        *steps_table(results),
        "",
        *handover_note(results),
        "The hand SQL (what could be timed apart):",
        "",
        *hand_parts(results),
        "",
        "Other measurements:",
        "",
        *extra_details(results),
        "",
        "### Interpretation",
        "",
        *interpret(results),
        "",
    ]
    return "\n".join(lines)


def show(results: dict[str, Any]) -> None:
    console.print()
    for line in results_table(results):
        console.print(line, markup=False, soft_wrap=True)
    console.print()
    for line in steps_table(results):
        console.print(line, markup=False, soft_wrap=True)
