"""How soon `tinygpt train` answers Ctrl-C: two SIGINTs 0.05 s apart at chosen moments of a run,
and the seconds from the first to the process's exit (the save included).

    python benchmarks/stop_latency.py                              # shakespeare-char, 6 moments
    python benchmarks/stop_latency.py --at 0.5 3 30 --preset baby

Each moment is a fresh run in a temporary --out, pressed `at` seconds after it started; extra
arguments after `--` go to `tinygpt train` (e.g. `-- --eval-iters 1` to reach the steps sooner).
It prints the first line the run printed and when, and one row per moment. The budget it checks
by eye is "about a second" (there is no reference to compare with: the old loop ignored a press
until the step or the evaluation in progress ended, 22 minutes for shakespeare-char's first).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from train_speed import machine_line   # benchmarks/ is on sys.path when run as a script


def peak_rss(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GB"
    except OSError:
        pass
    return "?"


def one_moment(at: float, preset: str, extra: list) -> dict:
    out = tempfile.mkdtemp(prefix="stop-latency-")
    shutil.rmtree(out)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tinygpt", "train", "--preset", preset,
                             "--out", out, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    threading.Thread(target=lambda: [lines.append((time.perf_counter() - start, line.rstrip()))
                                     for line in proc.stdout], daemon=True).start()
    while time.perf_counter() - start < at and proc.poll() is None:
        time.sleep(0.01)
    peak = peak_rss(proc.pid)
    pressed = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait()
    exited = time.perf_counter()
    time.sleep(0.1)                                  # the reader thread takes the last lines
    shutil.rmtree(out, ignore_errors=True)
    return dict(at=pressed - start, after=exited - pressed, code=proc.returncode, peak=peak,
                first=lines[0] if lines else None, last=lines[-1][1] if lines else "")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="shakespeare-char")
    p.add_argument("--at", type=float, nargs="+", default=[0.3, 0.8, 2, 10, 30, 60],
                   help="seconds after the start to press")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    print(machine_line())
    print(f"tinygpt train --preset {args.preset} {' '.join(extra)}")
    print("| pressed at | exited after | exit code | peak memory | last line |")
    print("| --- | --- | --- | --- | --- |")
    for at in args.at:
        r = one_moment(at, args.preset, extra)
        print(f"| {r['at']:.2f} s | {r['after']:.2f} s | {r['code']} | {r['peak']} | "
              f"{r['last'][:90]} |")
        if r["first"] is not None and at == max(args.at):
            print(f"first output at {r['first'][0]:.2f} s: {r['first'][1][:90]}")


if __name__ == "__main__":
    main()
