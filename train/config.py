"""Typed configs: dataclass defaults < YAML file (``--config``) < CLI flags. Unknown keys are errors."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from muse_fast.cli import EXIT_USER_ERROR
from muse_fast.errors import ConfigError, MuseError

T = TypeVar("T")


def one_line_errors(main: Callable[..., int]) -> Callable[..., int]:
    """A training entry point's ``main``: a :class:`MuseError` is one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except MuseError as exc:
            module = main.__module__.rsplit(".", 1)[-1]
            name = Path(sys.argv[0]).stem if module == "__main__" else module
            print(f"train.{name}: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR

    return wrapped


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got '{text}'")


def parse_config(cls: type[T], argv: list[str] | None, description: str) -> T:
    """Build ``cls`` from its defaults, an optional YAML file and ``--field value`` flags."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, help="YAML file with config values (flags override it)")
    for f in dataclasses.fields(cls):
        kind = _parse_bool if f.type in (bool, "bool") else {"int": int, "float": float}.get(str(f.type), None)
        kind = kind or (int if f.type is int else float if f.type is float else str)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=None, help=f"default: {f.default}"
        )
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        loaded = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config} must hold a mapping of config keys")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    return build_config(cls, values)


def build_config(cls: type[T], values: dict[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} for {cls.__name__}; valid keys: {sorted(names)}")
    return cls(**values)


def save_config(config: Any, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True) + "\n")
