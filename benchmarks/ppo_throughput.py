"""PPO throughput: our trainer vs TRL's last PPO trainer (trl.experimental.ppo, 1.9 line)
and TRL 1.16's RLOO, on the same model, prompts, response length and batch size.

    python benchmarks/ppo_throughput.py                       # ours + RLOO (+ TRL 1.9 PPO if its venv exists)
    python benchmarks/ppo_throughput.py --setup-trl19         # first create the TRL 1.9 venv
    python benchmarks/ppo_throughput.py --model smollm2-135m-instruct --steps 3 --bf16

TRL 1.16 has no PPO trainer, so TRL 1.9.x is installed into its own venv
(``$RLHF_CACHE/venv-trl19``, default ~/.cache/rlhf-toolkit) that reuses this venv's
torch/transformers through a .pth file and shadows only ``trl``.

Every framework runs in its own subprocess with the same settings: ``--rollout`` prompts
per iteration, ``--response-length`` new tokens, one mini-batch, ``--epochs`` PPO epochs
(RLOO: 1 iteration per generation, 2 generations per prompt so the same number of
samples), a randomly initialised scalar-head model of the policy's architecture as the
reward model (throughput does not depend on what it has learnt), no gradient checkpointing
(``--gradient-checkpointing`` for ours and RLOO; TRL's configs default to it, but its 1.9 PPO
trainer never turns it on). The first iteration is a
warm-up and is not timed. Reported: samples/s, seconds per iteration, the share spent
in ``generate``, achieved FLOP/s (an estimate: 2 x parameters per token per forward,
6 x per token per trained token) against a measured bf16/fp32 matmul peak, and the peak
resident memory (VmHWM) of the framework's subprocess (libraries and models included).
For ours also the training phase alone: its FLOPs (`trained_flops`: 6 x the multiply-adds
of the layers over every token and of the LM head over the response columns, for the policy
and the critic) over the seconds of the update, against the same peak (issue 17's
"training phase at >= 30 % of the matmul peak").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages come from this checkout

from benchmarks.harness import GenerateTimer, StepTimes, run_child, run_part  # noqa: E402
from ppo.config import PPOConfig  # noqa: E402
from ppo.trainer import PPOTrainer  # noqa: E402
from rlhf.generation import builtin_prompts, chat_prompt_ids  # noqa: E402
from rlhf.models import load_model, load_tokenizer  # noqa: E402


def trl19_venv() -> Path:
    return Path(os.environ.get("RLHF_CACHE", Path.home() / ".cache" / "rlhf-toolkit")) / "venv-trl19"


def setup_trl19() -> None:
    import site

    venv = trl19_venv()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site_packages = next(venv.glob("lib/python*/site-packages"))
    (site_packages / "main_venv.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "--no-deps", "trl>=1.9,<1.10"], check=True)


def matmul_peak(dtype_name: str, n: int = 1024, seconds: float = 2.0) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def make_reward_model(args, folder: Path):
    model = load_model(args.model, kind="seq_cls", seed=1)
    model.save_pretrained(folder)
    load_tokenizer(args.model).save_pretrained(folder)
    (folder / "reward_stats.json").write_text(json.dumps({"mean": 0.0, "std": 1.0, "n": 0}))
    return model


def prompts(args) -> list[str]:
    return builtin_prompts()[: args.rollout * (args.steps + 1)]


def flops_per_iteration(params: int, prompt_tokens: float, response_tokens: float, rollout: int, epochs: int,
                        forwards: int) -> float:
    """Generation (prefill + decode), `forwards` extra scoring passes, `epochs` trained passes."""
    tokens = (prompt_tokens + response_tokens) * rollout
    return 2 * params * tokens + forwards * 2 * params * tokens + epochs * 6 * params * tokens


def trained_flops(network, prompt_tokens: float, response_tokens: float) -> float:
    """FLOPs of one forward + backward of one sequence: 6 x the multiply-adds of its tokens.
    The layers see every token, the embedding lookup costs none, and an LM head only the
    response columns (+1) that the update passes through it (``logits_to_keep``)."""
    embedding = network.get_input_embeddings().weight
    output = network.get_output_embeddings()
    head = output.weight.numel() if output is not None else 0
    tied = output is not None and output.weight is embedding
    layers = sum(p.numel() for p in network.parameters()) - embedding.numel() - (0 if tied else head)
    return 6 * (layers * (prompt_tokens + response_tokens) + head * (response_tokens + 1))


def run_ours(args, work: Path) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    make_reward_model(args, work / "rm")
    (work / "prompts.txt").write_text("\n".join(prompts(args)))
    # one mini-batch of args.rollout episodes per epoch, micro-batches of args.micro (as TRL's config below)
    config = PPOConfig(sft_model_path=args.model, reward_model_path=str(work / "rm"), value_init="reward_model",
                       prompts=str(work / "prompts.txt"), per_device_train_batch_size=args.micro,
                       gradient_accumulation_steps=args.rollout // args.micro, num_mini_batches=1,
                       num_ppo_epochs=args.epochs, total_episodes=(args.steps + 1) * args.rollout,
                       response_length=args.response_length, temperature=0.7,
                       stop_token="<|endoftext|>" if args.no_stop else "eos", learning_rate=1e-6,
                       # pinned as TRL's run is (precision: auto could pick bf16 against TRL's fp32)
                       precision="bf16" if args.bf16 else "fp32", gradient_checkpointing=args.gradient_checkpointing,
                       output_dir=str(work / "out"), disable_tqdm=True,
                       sample_table_every=0, logging_steps=10**6, use_cpu=True)
    trainer = PPOTrainer(config)
    history = trainer.train()["history"][1:]
    seconds = sum(h["time/step"] for h in history)
    params = sum(p.numel() for p in trainer.unwrapped.policy.parameters())
    prompt_tokens = sum(len(p) for p in trainer.prompt_ids) / len(trainer.prompt_ids)
    response = sum(h["response/length"] for h in history) / len(history)
    # rollout forwards: policy, reference, value model, reward model; training: policy + value
    flops = flops_per_iteration(params, prompt_tokens, response, args.rollout, 2 * args.epochs, 3) * len(history)
    networks = [n for n in (trainer.unwrapped.policy, trainer.unwrapped.value_model) if n is not None]
    update_flops = args.epochs * args.rollout * sum(trained_flops(n, prompt_tokens, response) for n in networks)
    update_seconds = sum(h["time/update"] for h in history)
    return {"framework": "ours (ppo.trainer)", "seconds_per_iteration": seconds / len(history),
            "samples_per_second": args.rollout * len(history) / seconds,
            "generation_share": sum(h["time/generation"] for h in history) / seconds,
            "scoring_share": sum(h["time/scoring"] for h in history) / seconds,
            "rollout_forward_share": sum(h["time/forward"] for h in history) / seconds,
            "training_share": update_seconds / seconds,
            "mean_response_length": response, "achieved_flops": flops / seconds,
            "training_flops": update_flops * len(history) / update_seconds}


def run_rloo(args, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    torch.set_num_threads(args.threads)
    reward_model = make_reward_model(args, work / "rm")
    tokenizer = load_tokenizer(args.model, padding_side="left")
    # RLOO builds its reference model from the policy's path: give it a saved folder
    load_model(args.model).save_pretrained(work / "policy")
    tokenizer.save_pretrained(work / "policy")
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts(args)])
    config = RLOOConfig(output_dir=str(work / "out"), per_device_train_batch_size=args.rollout,
                        num_generations=2, generation_batch_size=args.rollout, max_completion_length=args.response_length,
                        temperature=0.7, max_steps=args.steps + 1, learning_rate=1e-6, use_cpu=True, bf16=args.bf16,
                        logging_steps=1, report_to="none", save_strategy="no", num_iterations=args.epochs,
                        # pinned as ours: TRL's default (on) recomputes the forward in the backward pass
                        gradient_checkpointing=args.gradient_checkpointing, disable_tqdm=True)
    trainer = RLOOTrainer(model=str(work / "policy"), reward_funcs=reward_model, args=config, train_dataset=dataset,
                          processing_class=tokenizer, reward_processing_classes=tokenizer)
    policy = trainer.model
    steps = StepTimes(GenerateTimer(policy))
    trainer.add_callback(steps.callback())
    trainer.train()
    params = sum(p.numel() for p in policy.parameters())
    prompt_tokens = sum(len(chat_prompt_ids(tokenizer, p)) for p in prompts(args)) / len(prompts(args))
    # rollout forwards: reference + reward model; training: policy
    return steps.summary(args.rollout, flops_per_iteration(params, prompt_tokens, args.response_length, args.rollout,
                                                   args.epochs, 2), "TRL 1.16 RLOO")


def run_trl19(args, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig as TRLPPOConfig
    from trl.experimental.ppo import PPOTrainer as TRLPPOTrainer

    torch.set_num_threads(args.threads)
    reward_model = make_reward_model(args, work / "rm")
    value_model = load_model(args.model, kind="seq_cls", seed=1)
    tokenizer = load_tokenizer(args.model, padding_side="left")
    policy, ref = load_model(args.model), load_model(args.model)
    timer = GenerateTimer(policy)
    dataset = Dataset.from_list([{"input_ids": chat_prompt_ids(tokenizer, p)} for p in prompts(args)])
    config = TRLPPOConfig(output_dir=str(work / "out"), per_device_train_batch_size=args.rollout,
                          local_rollout_forward_batch_size=args.micro, num_mini_batches=1, num_ppo_epochs=args.epochs,
                          response_length=args.response_length, temperature=0.7,
                          total_episodes=args.rollout * (args.steps + 1), learning_rate=1e-6, use_cpu=True,
                          bf16=args.bf16, report_to="none", save_strategy="no", num_sample_generations=0,
                          logging_steps=1, disable_tqdm=True, stop_token=None if args.no_stop else "eos")
    steps = StepTimes(timer)
    trainer = TRLPPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref,
                            reward_model=reward_model, value_model=value_model, train_dataset=dataset,
                            callbacks=[steps.callback()])
    trainer.train()
    params = sum(p.numel() for p in policy.parameters())
    prompt_tokens = sum(len(ids) for ids in dataset["input_ids"]) / len(dataset)
    # rollout forwards: policy, reference, value, reward; training: policy + value
    return steps.summary(args.rollout, flops_per_iteration(params, prompt_tokens, args.response_length, args.rollout,
                                                   2 * args.epochs, 3), "TRL 1.9 experimental PPO")




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random-llama-wide")
    parser.add_argument("--rollout", type=int, default=16, help="prompts per iteration")
    parser.add_argument("--micro", type=int, default=8, help="micro-batch / forward chunk")
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1, help="PPO epochs (RLOO: iterations per generation)")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--no-stop", action="store_true", help="never stop early: fixed-length responses")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="ours and TRL's RLOO recompute activations in the backward pass (default: neither; "
                             "TRL 1.9's PPO trainer never turns it on)")
    parser.add_argument("--only", nargs="+", default=["ours", "rloo", "trl19"])
    parser.add_argument("--setup-trl19", action="store_true")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.part:
        run_child({"ours": run_ours, "rloo": run_rloo, "trl19": run_trl19}[args.part], args)
        return 0
    if args.setup_trl19:
        setup_trl19()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1",
           "OMP_NUM_THREADS": str(args.threads)}
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--setup-trl19",)]
    passthrough = [a for i, a in enumerate(passthrough) if not (a == "--only" or (i and passthrough[i - 1] == "--only")
                                                              or a in args.only)]
    results = []
    for part in args.only:
        python = sys.executable
        if part == "trl19":
            python = str(trl19_venv() / "bin" / "python")
            if not Path(python).exists():
                results.append({"framework": "TRL 1.9 experimental PPO", "error": "no venv: run with --setup-trl19"})
                continue
        results.append(run_part(python, __file__, part, passthrough, env, ROOT))
    dtype = "bfloat16" if args.bf16 else "float32"
    peak = matmul_peak(dtype)
    print(f"model {args.model}, {args.rollout} prompts x {args.response_length} tokens, {args.epochs} epoch(s), "
          f"{args.threads} threads; measured {dtype} matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'framework':28} {'samples/s':>10} {'s/iter':>8} {'gen %':>6} {'GFLOP/s':>8} {'% peak':>7} "
          f"{'peak RSS MB':>12}")
    for r in results:
        if "error" in r:
            print(f"{r['framework']:28} error: {r['error']}")
            continue
        r["peak_flops"] = peak
        print(f"{r['framework']:28} {r['samples_per_second']:10.3f} {r['seconds_per_iteration']:8.3f} "
              f"{100 * r['generation_share']:6.1f} {r['achieved_flops'] / 1e9:8.2f} "
              f"{100 * r['achieved_flops'] / peak:7.1f} {r['peak_rss_bytes'] / 1e6:12.0f}")
        if "training_share" in r:
            print(f"{'':28} split: generation {100 * r['generation_share']:.0f}%, rollout forwards "
                  f"{100 * r['rollout_forward_share']:.0f}%, scoring {100 * r['scoring_share']:.0f}%, "
                  f"training {100 * r['training_share']:.0f}%; the training phase alone "
                  f"{r['training_flops'] / 1e9:.1f} GFLOP/s = {100 * r['training_flops'] / peak:.0f}% of the peak")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
