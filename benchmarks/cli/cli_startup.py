"""Start-up time of the command line: today's argparse parser vs a jsonargparse prototype of it.

Answers whether ``asr-stream`` should build its subcommands with jsonargparse (``jsonargparse.CLI`` on the
same command functions, which is what it is for) instead of its own argparse builder
(``asr_stream.cli.parser.add_command``). Each variant runs a cheap command (``masks``: no model, no audio) and
``transcribe --help`` in fresh processes; the figure is the median wall time of ``--runs`` runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cli/cli_startup.py --runs 7

The jsonargparse prototype is only a measurement (it is not wired into the package): the same six command
functions handed to ``jsonargparse.CLI``, so both variants import the same modules for the commands.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

PROTOTYPE = """
import sys
from jsonargparse import CLI
from asr_stream.cli import eval_cmd, export, masks, mic, sweep_cmd, transcribe
CLI([transcribe, mic, eval_cmd, sweep_cmd, masks, export], args=sys.argv[1:])
"""

VARIANTS = {
    "argparse (today)": [sys.executable, "-m", "asr_stream"],
    "jsonargparse.CLI prototype": [sys.executable, "-c", PROTOTYPE],
    "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
}
COMMANDS = {
    "masks": ["masks", "--k", "2", "--chunks", "3"],
    "transcribe --help": ["transcribe", "--help"],
}


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="fresh processes per variant and command")
    args = ap.parse_args()
    print(f"{'variant':36} {'command':20} median s   (min .. max) over {args.runs} runs")
    for name, base in VARIANTS.items():
        for label, argv in COMMANDS.items():
            cmd = base if name.startswith("python -c pass") else base + argv
            wall(cmd)  # warm the page cache and .pyc files
            times = [wall(cmd) for _ in range(args.runs)]
            print(f"{name:36} {label:20} {statistics.median(times):6.2f}     ({min(times):.2f} .. {max(times):.2f})")
            if name.startswith("python -c pass"):
                break


if __name__ == "__main__":
    main()
