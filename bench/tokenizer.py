"""Tokenizer training time and peak memory on >=100 MB of real text, for each tokenizer type.

Each training runs in its own process (peak RSS from getrusage) on the same ~100 MB mix of kernel
documentation, dictionary, Bible, Shakespeare and kernel C sources (bench/corpora.py).

    python bench/tokenizer.py [--types bpe,wordpiece,unigram] [--vocab 32000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpora

CHILD = """
import json, resource, sys, time
from pathlib import Path
from llmtrain.api.datasource import TokenizerSpec
from llmtrain.data import tokenizer
files = sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_file())
texts = (p.read_text(errors="replace") for p in files)
started = time.perf_counter()
trained = tokenizer.train(TokenizerSpec(type=sys.argv[2], vocab_size=int(sys.argv[3])), texts)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": round(elapsed, 1), "vocab": trained.vocab_size,
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--types", default="bpe,wordpiece,unigram")
    parser.add_argument("--vocab", type=int, default=32000)
    args = parser.parse_args()
    data = corpora.prose_mix()
    results = {"input_mb": round(corpora.size_of(data) / 1e6, 1), "vocab": args.vocab}
    for kind in args.types.split(","):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(data), kind, str(args.vocab)], capture_output=True, text=True
        )
        if out.returncode != 0:
            results[kind] = {"error": out.stderr.strip().splitlines()[-1]}
            continue
        results[kind] = {**json.loads(out.stdout), "wall_s": round(time.perf_counter() - started, 1)}
    results["max_child_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
