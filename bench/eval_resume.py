"""An ``eval/run.py --run_dir`` evaluation, then the same command again: the second reuses every checkpoint's stored
predictions (eval/resume.py), so it keeps only start-up, building the items, the keys, scoring the predictions again
(the bootstrap included) and writing the outputs.

    python bench/eval_resume.py [--checkpoints 2] [--n 400] [--threads 1]

The run folder holds ``--checkpoints`` copies of a tiny random Qwen2.5-VL saved as Trainer checkpoints (each with
its own weights file, so each is evaluated); both evaluations use expected decoding and the blindness check on the
final model, as the demo does. The two runs' metrics.json must be the same file. The last line printed is one JSON
object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", type=int, default=2)
    p.add_argument("--n", type=int, default=400, help="synthetic test items")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from cogip.models import build_tiny_qwen2_5_vl
    from eval.run import cli_main

    with tempfile.TemporaryDirectory() as tmp:
        run, out = Path(tmp) / "run", Path(tmp) / "eval"
        model = build_tiny_qwen2_5_vl(Path(tmp) / "model")
        for step in range(1, args.checkpoints + 1):
            ck = run / f"checkpoint-{step}"
            shutil.copytree(model, ck)
            (ck / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
        command = ["--run_dir", str(run), "--output_dir", str(out), "--synthetic_n", str(args.n), "--decoding",
                   "expected", "--blindness_models", "final", "--n_boot", "1000"]
        seconds, metrics = [], []
        for _ in range(2):
            t0 = time.perf_counter()
            if cli_main(command) != 0:
                raise RuntimeError("eval/run.py failed")
            seconds.append(time.perf_counter() - t0)
            metrics.append((out / "metrics.json").read_text())

    result = {"bench": "eval_resume", "checkpoints": args.checkpoints, "n_items": args.n,
              "first_s": round(seconds[0], 1), "again_s": round(seconds[1], 1),
              "ratio": round(seconds[0] / seconds[1], 2), "same_metrics": metrics[0] == metrics[1],
              "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
              "torch": torch.__version__}
    print(f"first evaluation {result['first_s']} s, again {result['again_s']} s "
          f"({result['ratio']}x); the same metrics.json: {result['same_metrics']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
