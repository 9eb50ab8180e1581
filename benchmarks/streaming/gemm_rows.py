"""Why small streaming calls cost more per position than one pass: matmul time per row against the row count.

A streaming step multiplies a few rows (one 320 ms chunk = 8 encoder frames; one decoder call = 1-5 rows) by the
same weight matrices that the one-pass floor multiplies with hundreds of rows at once. This prints, for the
weight shapes of the tiny model (d = 256), the time of ``x @ W`` per row for a range of row counts, and the ratio
to the largest row count: the price of computing in small pieces before any framework overhead.

    .venv/bin/python benchmarks/streaming/gemm_rows.py [--threads N] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import time

import torch

SHAPES = {  # (in, out) of the tiny model's matmuls
    "encoder attention in/out (256x256)": (256, 256),
    "encoder feed-forward up (256x1024)": (256, 1024),
    "decoder qkv (256x768)": (256, 768),
    "decoder gate_up (256x1536)": (256, 1536),
}
ROWS = (1, 2, 4, 8, 16, 64, 256, 1024)


def per_row_us(rows: int, k: int, n: int, dtype: torch.dtype, budget_s: float = 0.2) -> float:
    x, w = torch.randn(rows, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    with torch.inference_mode():
        for _ in range(10):
            torch.nn.functional.linear(x, w)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < budget_s:
            torch.nn.functional.linear(x, w)
            reps += 1
        return (time.perf_counter() - t0) / reps / rows * 1e6


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    print(f"torch {torch.__version__}, {a.threads} thread(s), {a.dtype}: microseconds per row "
          f"(x ratio to {ROWS[-1]} rows)")
    print("| weights | " + " | ".join(f"{r} rows" for r in ROWS) + " |")
    print("|---" * (len(ROWS) + 1) + "|")
    for name, (k, n) in SHAPES.items():
        us = [per_row_us(r, k, n, dtype) for r in ROWS]
        print(f"| {name} | " + " | ".join(f"{u:.2f} ({u / us[-1]:.0f}x)" for u in us) + " |")


if __name__ == "__main__":
    main()
