"""Read ``mlprod.yaml`` into a :class:`ProjectConfig`, with errors that name file, key and fix."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlprod.errors import ConfigError, did_you_mean
from mlprod.project.columns import expand_columns
from mlprod.project.config import ProjectConfig
from mlprod.project.registry import check_registry
from mlprod.project.timeless import check_times

CONFIG_FILE = "mlprod.yaml"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Tags of discriminated unions: pydantic puts them in error locations, people do not write them.
_TAGS = {
    "csv",
    "parquet",
    "duckdb",
    "postgres",
    "expr",
    "lookup",
    "asof",
    "aggregate",
    "columns",
    "out_of_time",
    "random",
    "kfold",
    "time_series_cv",
}


class _UniqueKeys(yaml.SafeLoader):
    """The safe loader, refusing a key written twice in one mapping: YAML's loaders keep the
    last without a word, so a second ``features:`` would silently replace the first."""


class _QuickUniqueKeys(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The same on libyaml's parser where PyYAML has it (5x quicker); a file it refuses is
    read again by :class:`_UniqueKeys`, whose messages say more."""


def _unique_mapping(loader: _UniqueKeys, node: yaml.MappingNode) -> dict[Any, Any]:
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
            continue
        key = loader.construct_object(key_node)
        if isinstance(key, str | int | float | bool) and key in first:
            raise yaml.constructor.ConstructorError(
                problem=f"key '{key}' is written twice in one mapping (first on line "
                f"{first[key]}); keep one",
                problem_mark=key_node.start_mark,
            )
        first.setdefault(key, key_node.start_mark.line + 1)
    return loader.construct_mapping(node)


for _loader in (_UniqueKeys, _QuickUniqueKeys):
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_config(folder: Path) -> ProjectConfig:
    """Load and validate the project in ``folder``."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"{folder}: no {CONFIG_FILE} here; run mlprod in a project folder or pass --project DIR"
        )
    text = path.read_text(encoding="utf-8")
    try:
        try:
            raw = yaml.load(text, Loader=_QuickUniqueKeys)
        except yaml.YAMLError:
            raw = yaml.load(text, Loader=_UniqueKeys)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{CONFIG_FILE}:{where}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{CONFIG_FILE}: expected a mapping of settings at the top level")
    return parse_config(_interpolate(raw, CONFIG_FILE))


def parse_config(raw: dict[str, Any], file: str = CONFIG_FILE) -> ProjectConfig:
    """Validate a config mapping; the first problems become one :class:`ConfigError`.

    Then what needs the whole config: a spine without time is checked (see
    :mod:`mlprod.project.timeless`), the registry's two spellings are compared (see
    :mod:`mlprod.project.registry`) and ``kind: columns`` entries are expanded (see
    :mod:`mlprod.project.columns`).
    """
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        errors = _drop_misspelt_missing(exc.errors(), raw)
        lines = [_describe(error, raw, file) for error in errors[:5]]
        more = len(errors) - len(lines)
        if more > 0:
            lines.append(f"... and {more} more problems")
        raise ConfigError("\n".join(dict.fromkeys(lines))) from None
    check_times(config, file)  # before expanding: its messages count features as the file does
    check_registry(config, file)
    return expand_columns(config, file)


def key_path(loc: tuple[int | str, ...]) -> str:
    """``('features', 3, 'source')`` -> ``features[3].source``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _location(error: Any) -> tuple[int | str, ...]:
    """The error's location in the file, without the union tags pydantic adds."""
    loc = error["loc"]
    # '[key]' marks an error in a mapping's key; the path already ends with that key.
    return tuple(part for i, part in enumerate(loc) if not _is_tag(loc, i) and part != "[key]")


def _drop_misspelt_missing(errors: list[Any], raw: dict[str, Any]) -> list[Any]:
    """Leave out "required, but missing" for a key that is there, misspelt (said once)."""
    meant: set[tuple[int | str, ...]] = set()
    for error in errors:
        if error["type"] == "extra_forbidden":
            *parent, key = _location(error)
            hint = did_you_mean(str(key), _allowed_keys(raw, tuple(parent)))
            if hint:
                meant.add((*parent, hint.split("'")[1]))
    return [e for e in errors if e["type"] != "missing" or _location(e) not in meant]


def _describe(error: Any, raw: dict[str, Any], file: str) -> str:
    loc = _location(error)
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        *parent, key = loc
        allowed = _allowed_keys(raw, tuple(parent))
        return f"{file}: {key_path(loc)}: unknown key '{key}'{did_you_mean(str(key), allowed)}"
    if kind == "missing":
        return f"{file}: {key_path(loc)}: required, but missing"
    if kind == "union_tag_invalid":
        tags = error["ctx"]["expected_tags"]
        found = error["ctx"]["tag"]
        hint = did_you_mean(str(found), [t.strip(" '") for t in tags.split(",")])
        return f"{file}: {key_path(loc)}: unknown kind '{found}'{hint}; expected one of {tags}"
    if kind == "union_tag_not_found":
        return f"{file}: {key_path(loc)}: needs a 'kind' key ({error['ctx']['discriminator']})"
    if kind == "value_error":
        return f"{file}: {key_path(loc)}: {error['ctx']['error']}"
    if kind == "string_pattern_mismatch":
        message = "must be a name of letters, digits and '_' that does not start with a digit"
        value = error.get("input")
        return f"{file}: {key_path(loc)}: invalid name {value!r}: {message}"
    if kind == "model_type":  # not "... instance of ColumnContract": people write YAML
        message = "should be a mapping of settings (key: value)"
    if kind == "too_short":
        ctx = error["ctx"]
        message = f"should have at least {ctx['min_length']} entry, found {ctx['actual_length']}"
    # pydantic says "Input should be ..."; say what was found, and the closest allowed value.
    if message.startswith("Input should"):
        message = "should" + message[len("Input should") :]
    found = error.get("input")
    if isinstance(found, str | int | float | bool) or found is None:
        message += f", found {found!r}"
    if kind == "literal_error" and isinstance(found, str):
        message += did_you_mean(found, re.findall(r"'([^']*)'", error["ctx"]["expected"]))
    return f"{file}: {key_path(loc)}: {message}"


def _is_tag(loc: tuple[Any, ...], index: int) -> bool:
    # By position: in ('features', 0, 'expr', 'expr') the first 'expr' is the tag, the second
    # is the feature's `expr` key.
    return (
        loc[index] in _TAGS
        and index > 0
        and (isinstance(loc[index - 1], int) or loc[index - 1] in ("from", "split"))
    )


def _allowed_keys(raw: dict[str, Any], parent: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``parent`` accepts, for "did you mean"."""
    from mlprod.project.config import ProjectConfig

    schema = ProjectConfig.model_json_schema(by_alias=True)
    node: Any = schema
    value: Any = raw
    for part in parent:
        value = value[part] if isinstance(value, dict | list) else None
        node = _child_schema(schema, node, part, value)
        if node is None:
            return []
    node = _resolve(schema, node, value)
    return list(node.get("properties", {})) if node else []


def _resolve(schema: dict[str, Any], node: Any, value: Any) -> Any:
    while isinstance(node, dict):
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].split("/")[-1]]
        elif "oneOf" in node or "anyOf" in node:
            options = node.get("oneOf") or node.get("anyOf")
            # The union's tag: features are told apart by "kind", splits by "method".
            tag = (node.get("discriminator") or {}).get("propertyName", "kind")
            kind = value.get(tag) if isinstance(value, dict) else None
            chosen = None
            for option in options or []:
                option = _resolve(schema, option, value)
                props = option.get("properties", {}) if isinstance(option, dict) else {}
                if (tag in props and props[tag].get("const") == kind) or (chosen is None and props):
                    chosen = option
            node = chosen
        else:
            return node
    return node


def _child_schema(schema: dict[str, Any], node: Any, part: Any, value: Any) -> Any:
    node = _resolve(schema, node, value)
    if not isinstance(node, dict):
        return None
    if isinstance(part, int):
        return node.get("items")
    if "properties" in node and part in node["properties"]:
        return node["properties"][part]
    if "patternProperties" in node:  # dict[Identifier, Model]
        return next(iter(node["patternProperties"].values()), None)
    return node.get("additionalProperties")


def _interpolate(value: Any, file: str) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in strings with the environment's values."""
    if isinstance(value, dict):
        return {k: _interpolate(v, file) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, file) for v in value]
    if isinstance(value, str) and "${" in value:

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{file}: environment variable {name} is not set; "
                f"set it or write ${{{name}:-default}}"
            )

        return _ENV.sub(substitute, value)
    return value
