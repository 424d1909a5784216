"""Strict TOML → frozen-dataclass loading, ``--set`` overrides, and TOML writing."""

import dataclasses
import pathlib
import tomllib
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ._schema import KIND_TABLES, TABLES, Config, ConfigError
from ._tasks import TASK_KEYS


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp)
    )


def _convert(key: str, value: Any, tp) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(key, f"invalid value {value!r}", _describe(tp))
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {value!r}", _describe(tp))
        return tuple(_convert(key, v, typing.get_args(tp)[0]) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}", _describe(tp))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}", _describe(tp))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}", _describe(tp))
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}", _describe(tp))
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a schema bug, not user input


def _build(cls, data: Mapping[str, Any], prefix: str):
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip("."), f"expected a table, got {data!r}", "a [table]")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(prefix + unknown[0], "unknown key", "allowed: " + ", ".join(fields))
    kwargs = {}
    for name, field in fields.items():
        key = prefix + name
        tp = hints[name]
        if name in TABLES and prefix == "":
            kwargs[name] = _build(TABLES[name], data.get(name, {}), name + ".")
            continue
        if name not in data:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise ConfigError(key, "is required", _describe(tp))
            continue
        kwargs[name] = _convert(key, data[name], tp)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.width=512"`` → (["model", "width"], 512); values are TOML literals (else strings)."""
    if "=" not in text:
        raise ConfigError(
            text, "an override needs the form KEY=VALUE", "e.g. --set model.width=512"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(key, "malformed key", "dotted keys such as model.width")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``KEY=VALUE`` overrides to a nested config dict (returns a new dict)."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            if part not in TABLES or i > 0:
                raise ConfigError(
                    ".".join(parts), "unknown table", "allowed tables: " + ", ".join(TABLES)
                )
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(".".join(parts[: i + 1]), "is not a table", "a [table]")
        node[parts[-1]] = value
    return data


def packaged_configs() -> pathlib.Path:
    """The folder of the project's configs (``demo.toml``, ``smoke/``, ``figures/``): inside the
    installed package (a wheel carries them as ``nfd/configs``), else the checkout's ``configs``."""
    here = pathlib.Path(__file__).resolve().parent.parent
    for root in (here / "configs", here.parent / "configs"):
        if (root / "demo.toml").is_file():
            return root
    raise ConfigError("configs", f"no configs next to {str(here)!r}", "reinstall nfd")


def from_dict(data: Mapping[str, Any]) -> Config:
    """Validate a nested dict (as read from TOML) into a `Config`; raises `ConfigError`."""
    cfg = _build(Config, data, "")
    for table, kind in KIND_TABLES.items():
        # a table of another kind is an error unless it holds only defaults (old saved configs)
        if table in data and cfg.kind != kind and getattr(cfg, table) != TABLES[table]():
            raise ConfigError(
                table,
                f"is read only by kind = {kind!r}, this config has kind = {cfg.kind!r}",
                f"set kind = {kind!r}, or remove the [{table}] table",
            )
    return cfg


def load(path: str | pathlib.Path, overrides: Sequence[str] = ()) -> Config:
    """Read a TOML config file, apply ``--set`` overrides, validate strictly."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(
            "config", f"cannot read {str(path)!r}: {err.strerror}", "a readable TOML file"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            "config", f"invalid TOML in {str(path)!r}: {err}", "TOML syntax"
        ) from None
    task = data.get("task")
    if isinstance(task, dict) and isinstance(task.get("path"), str) and task["path"]:
        # a data path in a file is relative to that file (a --set path: to the working directory)
        task["path"] = str((path.parent / pathlib.Path(task["path"]).expanduser()).resolve())
    return from_dict(apply_overrides(data, overrides))


def to_dict(cfg) -> Any:
    """A `Config` as a nested dict of TOML-writable values (tuples as lists)."""

    def conv(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dumps(cfg) -> str:
    """The resolved config as TOML text (every key, defaults included, but the tables of other
    kinds, `KIND_TABLES`, and the `task.*` keys its task does not read, `TASK_KEYS`); `load`
    reads it back."""
    data = {
        k: v for k, v in to_dict(cfg).items() if k not in KIND_TABLES or KIND_TABLES[k] == cfg.kind
    }
    read = ("name", *TASK_KEYS.get(cfg.task.name, ()))
    data["task"] = {k: v for k, v in data["task"].items() if k in read}
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"
