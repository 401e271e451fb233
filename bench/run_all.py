"""``make bench``: every benchmark, each in its own process (each starts its own embedded AWS)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"__init__", "awscalls", "common", "run_all", "soak", "soak_receiver", "soak_stack"}


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("*.py")):
        if script.stem in SKIP:
            continue
        print(f"\n######## bench.{script.stem}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"bench.{script.stem}"], cwd=HERE.parent)
        if code != 0:
            failed.append(script.stem)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
