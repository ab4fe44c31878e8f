"""``precision: auto | bf16 | fp32``: the compute precision chosen by measurement.

Whether bf16 autocast pays depends on the machine: on a CPU with AVX-512 BF16 (or AMX) or a
recent GPU a bf16 matmul runs several times faster than fp32, on an AVX2-only CPU it runs
slower (the casts cost more than the narrower multiply saves). So ``auto`` (the default of
PPO and the reward model) measures instead of guessing:

1. ``matmul_probe``: a fraction of a second of fp32 and bf16-autocast matmuls of the shapes
   that dominate our stages (the linear layers of SmolLM2-135M at a training micro-batch and
   a decoding step), measured once per process and device (``measured_speeds``).
2. ``check_numerics``: the stage's own loss on a few random inputs through the loaded model,
   once in fp32 and once under bf16 autocast; the two must agree within a relative
   tolerance (PPO: the policy's mean token log-prob, whose bf16 - fp32 difference is the
   log-ratio bf16 adds; reward model: the Bradley-Terry loss of random pairs).
3. ``choose_precision``: bf16 when it is at least ``min_speedup`` times faster and the
   numerics agree, else fp32, with the reason.

An explicit ``precision: bf16`` or ``fp32`` (or the old ``bf16: true``) wins and skips both.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from rlhf.config import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")
# (rows, in, out) of F.linear: SmolLM2-135M's attention and MLP projections (hidden 576,
# MLP 1536) at a 256-token training micro-batch, and its MLP at a 64-row decoding step.
PROBE_SHAPES = ((256, 576, 576), (256, 576, 1536), (256, 1536, 576), (64, 576, 1536))
MIN_SPEEDUP = 1.1  # a smaller gain is not worth the rounding
# bf16 keeps 8 bits of mantissa (0.4 % per value); SmolLM2-135M with a fresh score head moves the
# Bradley-Terry loss of random pairs by 0.7 %, its mean token log-prob by 0.06 %. More than 2 % is
# not rounding (the cancellation in tests/rlhf/test_precision.py is 100 %).
NUMERICS_RTOL = 0.02


def requested_precision(precision: str, bf16: bool) -> str:
    """The precision a config asks for: ``precision``, where ``bf16: true`` (TRL's and
    transformers' flag) means ``precision: bf16``. ``bf16: false`` is the flag's default and
    asks for nothing. A conflict is a ConfigError naming both fields."""
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"expected one of {PRECISIONS}, got {precision!r}")
    if bf16 and precision == "fp32":
        raise ConfigError("precision", "'bf16: true' asks for bf16 but 'precision: fp32' for fp32; expected one of "
                                       "them ('precision: bf16' is the new spelling of 'bf16: true')")
    return "bf16" if bf16 else precision


def device_type(use_cpu: bool) -> str:
    """Where the stage will compute: cuda when a CUDA device exists and use_cpu is off."""
    return "cuda" if torch.cuda.is_available() and not use_cpu else "cpu"


def _seconds(run: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def matmul_probe(device: str = "cpu", shapes=PROBE_SHAPES, budget: float = 0.5, max_repeats: int = 50) -> dict[str, float]:
    """GFLOP/s of fp32 and of bf16-autocast ``F.linear`` (fp32 inputs and weights, as a model
    sees them under autocast, casts included) over ``shapes``. The two alternate, one pass
    over all shapes each, for ``budget`` seconds (at least 3 and at most ``max_repeats`` times)
    and each keeps its fastest pass: on a busy machine other processes slow both alike and
    the fastest pass is the one least disturbed. bf16 is 0.0 where autocast cannot run it.
    About 0.6 s in all."""
    generator = torch.Generator().manual_seed(0)
    operands = [(torch.randn(m, k, generator=generator).to(device), torch.randn(n, k, generator=generator).to(device))
                for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)

    def one_pass():
        for x, w in operands:
            F.linear(x, w)

    def bf16_pass():
        with torch.autocast(device, dtype=torch.bfloat16):
            one_pass()

    with torch.no_grad():
        try:
            bf16_pass()  # warm-up (kernel selection), and does autocast run bf16 here at all?
        except (RuntimeError, TypeError):
            return {"fp32": flops / min(_seconds(one_pass, device) for _ in range(3)) / 1e9, "bf16": 0.0}
        one_pass()
        best = {"fp32": float("inf"), "bf16": float("inf")}
        started = time.perf_counter()
        for repeat in range(max_repeats):
            best["fp32"] = min(best["fp32"], _seconds(one_pass, device))
            best["bf16"] = min(best["bf16"], _seconds(bf16_pass, device))
            if repeat >= 2 and time.perf_counter() - started > budget:
                break
    return {name: flops / seconds / 1e9 for name, seconds in best.items()}


@functools.cache
def measured_speeds(device: str) -> dict[str, float]:
    """``matmul_probe`` once per process and device: every stage of a process shares it."""
    return matmul_probe(device)


@dataclass(frozen=True)
class NumericsCheck:
    """A loss evaluated in fp32 and under bf16 autocast on the same inputs."""

    fp32: float
    bf16: float
    rtol: float

    @property
    def relative_error(self) -> float:
        return abs(self.bf16 - self.fp32) / max(abs(self.fp32), 1e-12)

    @property
    def ok(self) -> bool:
        return self.relative_error <= self.rtol


def check_numerics(loss_fn: Callable[[], torch.Tensor], device: str = "cpu", rtol: float = NUMERICS_RTOL) -> NumericsCheck:
    """``loss_fn()`` (a scalar, same inputs each call) in fp32 and under bf16 autocast."""
    with torch.no_grad():
        fp32 = float(loss_fn())
        with torch.autocast(device, dtype=torch.bfloat16):
            bf16 = float(loss_fn())
    return NumericsCheck(fp32, bf16, rtol)


def choose_precision(speeds: dict[str, float], numerics_ok: bool | None,
                     min_speedup: float = MIN_SPEEDUP) -> tuple[str, str]:
    """("bf16" | "fp32", reason) from measured GFLOP/s ``{"fp32": ..., "bf16": ...}`` and the
    numerics check (None: not run yet, so the choice rests on speed alone)."""
    if not speeds.get("bf16"):
        return "fp32", "bf16 autocast does not run on this device"
    speedup = speeds["bf16"] / speeds["fp32"]
    if speedup < min_speedup:
        return "fp32", f"bf16 matmuls run {speedup:.2f}x fp32's speed here, below the {min_speedup:g}x that pays"
    if numerics_ok is False:
        return "fp32", f"bf16 matmuls run {speedup:.2f}x faster, but the loss under bf16 is off by more than the tolerance"
    checked = " and the loss agrees with fp32" if numerics_ok else ""
    return "bf16", f"bf16 matmuls run {speedup:.2f}x fp32's speed here{checked}"


@dataclass(frozen=True)
class PrecisionChoice:
    """What a stage computes in, why, and the measurements behind it (for logs and records)."""

    precision: str  # "bf16" | "fp32"
    requested: str  # "auto" | "bf16" | "fp32"
    reason: str
    speeds: dict[str, float] | None = None  # GFLOP/s, when probed
    numerics: NumericsCheck | None = None

    def note(self) -> str:
        """One ``note:`` line for stderr."""
        measured = ""
        if self.speeds is not None:
            measured = f" (matmul fp32 {self.speeds['fp32']:.1f}, bf16 {self.speeds['bf16']:.1f} GFLOP/s"
            if self.numerics is not None:
                measured += f"; loss fp32 {self.numerics.fp32:.5g}, bf16 {self.numerics.bf16:.5g}"
            measured += ")"
        return f"note: precision {self.requested} -> {self.precision}: {self.reason}{measured}"

    def record(self) -> dict:
        """Flat numbers for a run's saved metrics and tracker config."""
        record = {"precision": self.precision, "precision_requested": self.requested}
        if self.speeds is not None:
            record |= {"precision_fp32_gflops": round(self.speeds["fp32"], 2),
                       "precision_bf16_gflops": round(self.speeds["bf16"], 2)}
        if self.numerics is not None:
            record |= {"precision_loss_fp32": self.numerics.fp32, "precision_loss_bf16": self.numerics.bf16}
        return record


def resolve_precision(requested: str, device: str, loss_fn: Callable[[], torch.Tensor] | None = None,
                      rtol: float = NUMERICS_RTOL, check_device: str | None = None) -> PrecisionChoice:
    """The precision to run in: ``requested`` unless "auto"; for auto the (cached) matmul probe
    on ``device`` and, when it favours bf16 and ``loss_fn`` is given, the numerics check (on
    ``check_device``, where the model is; default ``device``) decide."""
    if requested != "auto":
        return PrecisionChoice(requested, requested, "set in the config")
    speeds = measured_speeds(device)
    choice, reason = choose_precision(speeds, None)
    numerics = None
    if choice == "bf16" and loss_fn is not None:
        numerics = check_numerics(loss_fn, check_device or device, rtol)
        choice, reason = choose_precision(speeds, numerics.ok)
    return PrecisionChoice(choice, "auto", reason, speeds, numerics)


def random_token_ids(vocab_size: int, rows: int = 2, length: int = 16, seed: int = 0) -> torch.Tensor:
    """(rows, length) token ids drawn uniformly, for the numerics checks (no data needed)."""
    return torch.randint(vocab_size, (rows, length), generator=torch.Generator().manual_seed(seed))
