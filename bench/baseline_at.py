"""A module as it was at a given commit, loaded next to today's, so a bench can time the
old and the new code in the same process (same input, same machine state).

The old text comes from ``git show COMMIT:PATH``; its imports resolve to today's
modules, so only a module whose dependencies kept their interface can be loaded this way.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_at(commit: str, path: str) -> types.ModuleType | None:
    """``path`` (e.g. "operators/book.py") as of ``commit``, or None without git history."""
    try:
        text = subprocess.run(
            ["git", "show", f"{commit}:{path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"cannot load {path} at {commit} ({exc}): old code not timed", file=sys.stderr)
        return None
    name = "baseline_" + path.removesuffix(".py").replace("/", "_") + "_" + commit[:8]
    module = types.ModuleType(name)
    module.__file__ = f"{commit}:{path}"
    sys.modules[name] = module  # dataclasses and pickle look modules up by name
    exec(compile(text, module.__file__, "exec"), module.__dict__)
    return module
