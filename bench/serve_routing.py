"""Benchmark: what routing costs the REST server (issue 11's targets).

Three ``mlprod serve`` configurations of the same project run on loopback, as subprocesses:

1. **single**: ``mlprod serve --model CONTROL``, one version as before experiments.
2. **experiment**: a ``deploy:`` section with CONTROL and CHALLENGER at 50/50, assigned at
   random per request (the record is the same every time, so assignment by a key would always
   pick one variant); each answer is scored by one of the two and logged with its experiment.
3. **shadow**: CONTROL answers everything, CHALLENGER is scored as a shadow after each answer
   and logged with ``served=False``.

All three are sent the same real record (``bench/serve.py``'s ``read_record``) as
``POST /predict?at=...``. Latency is taken sequentially on one keep-alive connection in blocks
of ``--requests``, the configurations taking turns for ``--rounds`` rounds (so a busy moment of
a shared machine does not fall on one configuration only); then throughput with the python
load generator of ``bench/serve.py``. Ratios are to the single model of the same run.
Targets: experiment p50 <= 1.1x single; shadow p99 <= 1.3x single.

Run ``.venv/bin/python bench/serve_routing.py --project DIR --control flights/1
--challenger flights/2`` (the online store must be materialized for both).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from serve import (
    AT,
    Server,
    free_port,
    python_load,
    read_record,
    running,
    sequential,
    tree_cpu_seconds,
)

from mlprod import Project

BIN = Path(sys.executable).parent


def configurations(
    project: Project, control: str, challenger: str, tmp: Path
) -> dict[str, list[str]]:
    """The serve command of each configuration, each with a project folder of its own that
    shares the data, registry and online store but not the prediction log."""
    base = yaml.safe_load((project.folder / "mlprod.yaml").read_text())
    deploys: dict[str, dict[str, Any] | None] = {
        "single": None,
        "experiment": {
            "experiment": "bench-ab",
            "variants": [
                {"name": "control", "model": control, "weight": 50},
                {"name": "challenger", "model": challenger, "weight": 50},
            ],
        },
        "shadow": {
            "experiment": "bench-shadow",
            "variants": [{"name": "control", "model": control}],
            "shadows": [{"name": "next", "model": challenger}],
        },
    }
    commands: dict[str, list[str]] = {}
    for name, deploy in deploys.items():
        folder = tmp / name
        folder.mkdir()
        for part in ("data", ".mlprod"):
            (folder / part).symlink_to(project.folder / part)
        config = {**base, "log": {"path": f"log-{name}/predictions.sqlite"}}
        config.pop("deploy", None)
        if deploy is not None:
            config["deploy"] = deploy
        (folder / "mlprod.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        command = [str(BIN / "mlprod"), "serve", "--project", str(folder), "--port", "{port}"]
        commands[name] = command + (["--model", control] if deploy is None else [])
    return commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("examples/flights"))
    parser.add_argument("--control", default="flights@champion")
    parser.add_argument("--challenger", required=True)
    parser.add_argument("--requests", type=int, default=1000, help="per block")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    project = Project.load(args.project)
    record = read_record(project.deployment(args.control), AT)
    body = json.dumps(record, default=str).encode()
    path = f"/predict?at={AT.isoformat()}"
    latencies: dict[str, list[float]] = {}
    loads: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        commands = configurations(project, args.control, args.challenger, tmp)
        ports = {name: free_port() for name in commands}
        servers = {
            name: Server(name, command, {}, "/health", path, body, lambda a: 0.0, 0.0)
            for name, command in commands.items()
        }
        contexts = {
            name: running(servers[name], ports[name], tmp / f"{name}.log") for name in servers
        }
        pids = {name: context.__enter__() for name, context in contexts.items()}
        try:
            names = list(commands)
            for round_ in range(args.rounds):
                for name in names[round_ % 3 :] + names[: round_ % 3]:
                    block = sequential(ports[name], path, body, args.requests, args.warmup)
                    latencies.setdefault(name, []).extend(block)
                    print(
                        f"round {round_ + 1} {name}: p50 {np.percentile(block, 50):.2f} ms, "
                        f"p99 {np.percentile(block, 99):.2f} ms",
                        flush=True,
                    )
            for name in names:
                before = tree_cpu_seconds(pids[name])
                load = python_load(ports[name], path, body, args.connections, args.seconds)
                load.cpu_seconds = tree_cpu_seconds(pids[name]) - before
                loads[name] = load
                time.sleep(1.0)  # let a shadow queue drain before the next one
        finally:
            for context in contexts.values():
                context.__exit__(None, None, None)
    single = latencies["single"]
    print(
        f"\n{'configuration':<12} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>6} {'p99 x':>6} "
        f"{'req/s':>7} {'req/s x':>7} {'CPU ms/req':>10} {'failed':>6}"
    )
    for name, values in latencies.items():
        load = loads[name]
        print(
            f"{name:<12} {np.percentile(values, 50):8.2f} {np.percentile(values, 99):8.2f} "
            f"{np.percentile(values, 50) / np.percentile(single, 50):6.2f} "
            f"{np.percentile(values, 99) / np.percentile(single, 99):6.2f} "
            f"{load.requests_per_second:7.0f} "
            f"{load.requests_per_second / loads['single'].requests_per_second:7.2f} "
            f"{load.cpu_ms_per_request:10.2f} {load.failed:6d}"
        )
    print(f"(sequential: {len(single)} requests per configuration; {loads['single'].tool})")


if __name__ == "__main__":
    main()
