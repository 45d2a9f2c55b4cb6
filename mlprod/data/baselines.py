"""Remember what each source looked like at the last accepted build, to catch jumps.

A declared ``max_null_rate`` catches a column going bad beyond a fixed bound; the baseline
catches a change relative to history (a column that was 2% null and is suddenly 30% null),
which is how most upstream breakages look.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mlprod.data.contracts import SourceProfile
from mlprod.errors import ContractError
from mlprod.project.config import SourceConfig


def baseline_path(store: Path, source: str) -> Path:
    return store / "sources" / f"{source}.json"


def load_null_rates(store: Path, source: str) -> dict[str, float] | None:
    path = baseline_path(store, source)
    if not path.is_file():
        return None
    rates: dict[str, float] = json.loads(path.read_text())["null_rates"]
    return rates


def check_null_rate_jump(store: Path, profile: SourceProfile, source: SourceConfig) -> None:
    """Raise if a column's null rate rose more than ``null_rate_jump`` over the baseline."""
    limit = source.null_rate_jump
    baseline = load_null_rates(store, profile.name)
    if limit is None or baseline is None:
        return
    for column, rate in profile.null_rates.items():
        before = baseline.get(column)
        if before is not None and rate - before > limit:
            path = baseline_path(store, profile.name)
            raise ContractError(
                f"source '{profile.name}': column '{column}' jumped from {before:.2%} to "
                f"{rate:.2%} null since the last accepted build (more than null_rate_jump "
                f"{limit:.2%}); fix the upstream data, or delete {path} to accept it"
            )


def save_baselines(store: Path, profiles: list[SourceProfile]) -> None:
    """Record the profiles of a build that was accepted (written successfully)."""
    for profile in profiles:
        path = baseline_path(store, profile.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = {"rows": profile.rows, "types": profile.types, "null_rates": profile.null_rates}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
