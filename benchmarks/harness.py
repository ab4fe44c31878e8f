"""What the trainer benchmarks share: one subprocess per framework, timing of TRL trainers
through a callback and of ``generate`` through a wrapper, and the subprocess's peak memory."""

from __future__ import annotations

import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path


def peak_rss_bytes() -> int:
    """Peak resident set size of this process: /proc's VmHWM, else getrusage's ru_maxrss (KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class GenerateTimer:
    """Wraps ``model.generate`` on the instance and sums its wall time."""

    def __init__(self, model):
        self.total, self.model, original = 0.0, model, model.generate

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start

        model.generate = timed


class StepTimes:
    """Trainer callback recording, at every step end, the wall clock and the time spent in generate."""

    def __init__(self, timer: GenerateTimer):
        self.times, self.generation, self.timer = [], [], timer

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                outer.times.append(time.perf_counter())
                outer.generation.append(outer.timer.total)
        return Callback()

    def summary(self, samples_per_iteration: int, flops_per_iteration: float | None, name: str,
                steps_per_iteration: int = 1) -> dict:
        """Samples/s, seconds per iteration, share in generate and (given the FLOPs of an iteration)
        FLOP/s after the first (warm-up) iteration, an iteration being ``steps_per_iteration``
        optimizer steps on one generation."""
        times = self.times[steps_per_iteration - 1::steps_per_iteration]
        generation = self.generation[steps_per_iteration - 1::steps_per_iteration]
        n = len(times) - 1
        seconds = times[-1] - times[0]
        result = {"framework": name, "seconds_per_iteration": seconds / n,
                  "samples_per_second": samples_per_iteration * n / seconds,
                  "generation_share": (generation[-1] - generation[0]) / seconds}
        if flops_per_iteration is not None:
            result["achieved_flops"] = flops_per_iteration * n / seconds
        return result


def run_child(runner, args) -> None:
    """In the framework's subprocess: run it in a scratch folder and print its result line,
    with the process's peak resident memory."""
    with tempfile.TemporaryDirectory() as work:
        result = runner(args, Path(work))
    result["peak_rss_bytes"] = peak_rss_bytes()
    print("RESULT " + json.dumps(result))


def run_part(python: str, script: str, part: str, argv: list[str], env: dict, cwd: Path) -> dict:
    """Run ``script --part part argv`` in a fresh interpreter; its result line, or the error."""
    done = subprocess.run([python, script, "--part", part, *argv], env=env, cwd=cwd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if lines:
        return json.loads(lines[-1][len("RESULT "):])
    return {"framework": part, "error": done.stderr.strip().splitlines()[-1:] or done.returncode}
