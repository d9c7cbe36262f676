"""Benchmark: the cost of importing open_clip in a fresh process, the way every model-loading job does.

Named baseline, in the same run: `import open_clip` as such (which also imports transformers, for HF text
towers and CoCa generation). Measured: `workflow_scripts.models.clip.import_open_clip()`, which hides
transformers during that import. Each variant runs `--repeat` times in fresh interpreters, alternating, and
the medians of wall and CPU (user + sys) time are compared.

    python bench/open_clip_import.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "import open_clip (baseline)": "import open_clip",
    "models.clip.import_open_clip()": "from workflow_scripts.models.clip import import_open_clip; import_open_clip()",
}
TIMED = """
import json, os, sys, time
t0, c0 = time.perf_counter(), os.times()
exec(sys.argv[1])
c1 = os.times()
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": (c1.user - c0.user) + (c1.system - c0.system),
                  "transformers": "transformers" in sys.modules}))
"""


def measure(statement: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", TIMED, statement], cwd=REPO, capture_output=True, text=True,
                          check=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    runs = {name: [] for name in VARIANTS}
    measure(VARIANTS["import open_clip (baseline)"])                     # warm the page cache
    for _ in range(args.repeat):
        for name, statement in VARIANTS.items():
            runs[name].append(measure(statement))
    base = {k: statistics.median(r[k] for r in runs["import open_clip (baseline)"]) for k in ("wall", "cpu")}
    print(f"{'variant':34s} {'wall s':>8s} {'cpu s':>8s} {'ratio (cpu)':>12s}  transformers imported")
    for name, rs in runs.items():
        wall, cpu = (statistics.median(r[k] for r in rs) for k in ("wall", "cpu"))
        print(f"{name:34s} {wall:8.2f} {cpu:8.2f} {cpu / base['cpu']:12.2f}  {rs[0]['transformers']}")
    print(f"median of {args.repeat} fresh interpreters each; baseline = plain `import open_clip`")


if __name__ == "__main__":
    main()
