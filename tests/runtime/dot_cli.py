"""``muse-fast`` with the dot engine of :mod:`dots` in place of the network, for tests that run the CLI for real.

Usage: ``python dot_cli.py infer SLIDE --out DIR ...`` (any ``muse-fast`` arguments). Also importable: ``use_dots``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from dots import META, DotEngine  # noqa: E402

import muse_fast.cli as cli  # noqa: E402


def build_dot_engine(name, weights, device, batch_size, precision="auto", tta=False):
    from muse_fast.runtime.tta import FlipTTAEngine

    return (FlipTTAEngine(DotEngine()) if tta else DotEngine()), META, "dots"


def use_dots() -> None:
    cli._build_engine = build_dot_engine


if __name__ == "__main__":
    use_dots()
    raise SystemExit(cli.main(sys.argv[1:]))
