"""Measured matmul throughput of this machine, fp32 against bf16 (not a test).

The shapes are the ones that matter here: a large square matmul (the machine's peak) and
the linear layers of SmolLM2-135M at decoding (64 rows) and training (512 rows) sizes.
bf16 pays off only where the CPU has AMX (or on a GPU); on an AVX2-only CPU it is slower.

    .venv/bin/python benchmarks/matmul_peak.py [--threads 2]
"""

import argparse
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = [(2048, 2048, 2048), (64, 576, 1536), (512, 576, 1536), (64, 576, 49152)]


def gflops(m: int, k: int, n: int, dtype: torch.dtype, min_seconds: float = 0.5) -> float:
    x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    F.linear(x, w)  # warm-up (kernel selection)
    reps, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        F.linear(x, w)
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    amx = sorted(set(re.findall(r"\bamx\w*", flags)))
    print(f"torch {torch.__version__}, {args.threads} threads, AMX flags: {amx or 'none'}")
    for m, k, n in SHAPES:
        fp32, bf16 = gflops(m, k, n, torch.float32), gflops(m, k, n, torch.bfloat16)
        print(f"{m:>5} x {k:>4} x {n:>5}: fp32 {fp32:7.1f} GFLOP/s, bf16 {bf16:7.1f} GFLOP/s, bf16/fp32 = {bf16 / fp32:.2f}x")


if __name__ == "__main__":
    main()
