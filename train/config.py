"""Typed configs: dataclass defaults < YAML file (``--config``) < CLI flags. Unknown keys are errors."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Iterable
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
        except (MuseError, OSError) as exc:
            module = main.__module__.rsplit(".", 1)[-1]
            name = Path(sys.argv[0]).stem if module == "__main__" else module
            if isinstance(exc, OSError):  # a path that cannot be written or read: name it, no traceback
                exc = f"cannot access {exc.filename or 'a file'}: {exc.strerror or exc}; choose another path"
            print(f"train.{name}: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR

    return wrapped


def check_output_file(out: Path, inputs: Iterable[Path] = (), flag: str = "--out") -> None:
    """Refuse, before any work, an output file that is a folder, has no name, sits under a file, or is an input."""
    if not out.name or out.is_dir():
        raise ConfigError(f"{flag} {out} is a folder; give a file name such as {out / 'weights.pt'}")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"{flag} {out} lies under the file {parent}; choose another path")
    if out.resolve() in {Path(p).resolve() for p in inputs}:
        raise ConfigError(f"{flag} {out} is one of the inputs; write to a new file")


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
