"""Peak memory of `llmtrain ingest` on hostile input: 256 MiB of one byte in a 256 KiB gzip with no line
break, a file of NUL bytes, and six plays beside them. The functional side (one counted `too_long`, one
`binary`, the plays kept) is tested in tests/workload/test_ingest_local.py; the memory figure is here.

    python bench/ingest_bomb.py      (JSON on stdout; held to 384 MiB, ~150 MiB on the development machine)
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CEILING_MIB = 384  # holding the 256 MiB line anywhere would put the peak above 400

# VmHWM, not ru_maxrss: after fork + exec, ru_maxrss keeps the parent's size
PROBE = """import resource, runpy, sys
sys.argv = ['llmtrain', 'ingest', '-f', sys.argv[1], '--output', sys.argv[2]]
try:
    runpy.run_module('llmtrain.cli', run_name='__main__')
finally:
    status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]
    peak = max(int(status), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print('PEAK_KIB', peak, file=sys.stderr)
"""


def write_inputs(data: Path) -> None:
    data.mkdir()
    for path in sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[:6]:
        (data / path.name).write_bytes(path.read_bytes())
    with gzip.open(data / "bomb.txt.gz", "wb", compresslevel=9) as bomb:
        for _ in range(16):
            bomb.write(b"A" * (16 << 20))
    (data / "nul.txt").write_bytes(b"\0" * 100_000)


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        write_inputs(work_dir / "data")
        spec = {
            "apiVersion": "llmtrain.dev/v1alpha1",
            "kind": "DataSource",
            "metadata": {"name": "bomb"},
            "spec": {
                "sources": [{"local": {"path": "data/*"}}],
                "format": "txt",
                "tokenizer": {"type": "bpe", "vocabSize": 1024},
                "validation": {"minChars": 100},
                "split": {"validationFraction": 0.2},
                "output": {"shardTokens": 50_000},
            },
        }
        (work_dir / "run.yaml").write_text(json.dumps(spec))
        result = subprocess.run(
            [sys.executable, "-c", PROBE, str(work_dir / "run.yaml"), str(work_dir / "out")],
            capture_output=True,
            text=True,
            timeout=600,
        )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    peak_mib = int(result.stderr.rsplit("PEAK_KIB", 1)[1].split()[0]) / 1024
    stats = json.loads(result.stdout.strip().splitlines()[-1])["stats"]
    figures = {"peak_rss_mib": round(peak_mib), "ceiling_mib": CEILING_MIB, "within": peak_mib < CEILING_MIB}
    print(json.dumps({**figures, "rejected": stats["rejected"], "documentsOut": stats["documentsOut"]}, indent=2))


if __name__ == "__main__":
    main()
