"""Data-parallel training on one machine: N MPI ranks x 1 thread against 1 process x N threads.

    python benchmarks/mpi_speed.py                      # baby and shakespeare-char, 2 ranks
    python benchmarks/mpi_speed.py --presets baby --rounds 5

Both sides run `tinygpt train` from the command line with the same global batch (one process
with batch B, or N ranks with batch B / N each) and the same number of steps, alternating
round by round. The figure is tokens/s while stepping, as tinygpt writes it in metrics.csv at the
last evaluation (evaluation and checkpoint time excluded), median over the rounds. Needs the mpi
extra: pip install -e ".[mpi]".
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import cpu_count, machine_line  # noqa: E402

# (preset, global batch, iterations): the shapes of benchmarks/train_speed.py
CASES = {"baby": (12, 200), "shakespeare-char": (8, 16)}


def mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def tokens_per_sec(cmd: list[str], out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = (out / "metrics.csv").read_text().splitlines()[-1].split(",")
    return float(last[4])


def main(argv=None):
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--presets", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    launcher = mpiexec()
    if launcher is None:
        sys.exit('no mpiexec: pip install -e ".[mpi]" installs MPICH\'s')
    n, cores = args.ranks, cpu_count()
    print(machine_line())
    print("| preset (global batch, steps) | side | tokens/s (median) | rounds | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for preset in args.presets:
        batch, iters = CASES[preset]
        if batch % n:
            sys.exit(f"{preset}: global batch {batch} does not split over {n} ranks")
        common = [sys.executable, "-m", "tinygpt.cli", "train", "--preset", preset,
                  "--max-iters", str(iters), "--eval-interval", str(iters), "--eval-iters", "1",
                  "--quiet", "--overwrite"]
        sides = {f"1 process x {cores} threads, batch {batch}":
                 lambda out: common + ["--batch-size", str(batch), "--threads", str(cores),
                                       "--out", str(out)],
                 f"{n} ranks x {max(1, cores // n)} thread(s), batch {batch // n} each":
                 lambda out: [launcher, "-n", str(n)] + common +
                 ["--batch-size", str(batch // n), "--threads", str(max(1, cores // n)),
                  "--out", str(out)]}
        results = {side: [] for side in sides}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for side, cmd in sides.items():
                    out = Path(tmp) / "run"
                    results[side].append(tokens_per_sec(cmd(out), out))
        base = statistics.median(results[next(iter(sides))])
        for side, values in results.items():
            med = statistics.median(values)
            print(f"| {preset} ({batch}, {iters}) | {side} | {med:,.0f} | {len(values)} | "
                  f"{med / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
