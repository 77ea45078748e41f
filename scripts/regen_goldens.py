#!/usr/bin/env python
"""Regenerate fixtures/golden/ from the current code (see docs/benchmarks.md, "Golden outputs").

    .venv/bin/python scripts/regen_goldens.py                 # every bundled capture
    .venv/bin/python scripts/regen_goldens.py --capture okx/<capture file>  # one capture
    .venv/bin/python scripts/regen_goldens.py --check         # compare only, write nothing

Allowed only for an intended, reviewed change of the output (a new capture, a documented
contract change): never to make tests/test_golden_outputs.py pass after a refactor or a
speed-up, which must give byte-identical output. The commit that regenerates says why, and
the diff of fixtures/golden/*/manifest.json shows which series changed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from golden_outputs import (
    VENUES,
    bundled_captures,
    compare,
    report,
    run_replay,
    write_golden,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--capture", action="append", help="capture under fixtures/captures (default: all)"
    )
    parser.add_argument("--check", action="store_true", help="compare with the goldens only")
    args = parser.parse_args(argv)
    captures = args.capture or bundled_captures()
    unknown = [c for c in captures if c not in VENUES]
    if unknown:
        print(f"no venue known for {unknown}: add it to VENUES in tests/golden_outputs.py")
        return 2
    failed = 0
    for capture in captures:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            run_replay(capture, out)
            if args.check:
                differences = compare(capture, out)
                print(report(capture, differences) if differences else f"{capture}: same")
                failed += bool(differences)
            else:
                print(f"{capture}: wrote {write_golden(capture, out)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
