"""Continuous-control PPO for the iiwa14 tasks, with a pluggable reward source.

CleanRL's ppo_continuous_action, rearranged around two facts of these tasks:

* Episodes have a fixed length and every sub-env resets at the same step, so a rollout of
  `episodes_per_rollout * H` steps per sub-env is a stack of whole episodes. GAE then runs
  per episode along the last axis (`ppo.core.compute_gae`), bootstrapped with V(final obs)
  because the time limit is not a terminal state of the task.
* The reward the agent optimises is a function of the rollout: the env's true reward, or
  the mean of a learned reward ensemble over (obs, action) features, computed in batches.
  The true reward is always recorded for teachers and metrics.

The policy is a Gaussian MLP with a state-independent learned log-std; the value net is a
separate MLP; both see observations normalised by running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ppo.core import compute_gae, explained_variance, gaussian_entropy, gaussian_log_prob, policy_loss, value_loss, whiten
from robot.vec_env import Iiwa14VecEnv, make_vec_env


class RunningMeanStd(nn.Module):
    """Running mean/variance of observations (parallel-variance merge), saved in state_dict."""

    def __init__(self, dim: int, clip: float = 10.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip = clip

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        batch = batch.reshape(-1, batch.shape[-1]).double()
        batch_mean, batch_var, n = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total)
        self.count.fill_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        normalised = (obs.double() - self.mean) / torch.sqrt(self.var + 1e-8)
        return normalised.clamp(-self.clip, self.clip).float()


def _mlp(input_dim: int, hidden: int, output_dim: int, output_gain: float) -> nn.Sequential:
    """2 tanh hidden layers, orthogonal init (CleanRL): small last-layer gain keeps early actions near 0."""
    layers = [nn.Linear(input_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, output_dim)]
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain=output_gain if layer is layers[-1] else np.sqrt(2))
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class Agent(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 64, init_log_std: float = -0.5, obs_clip: float = 10.0):
        super().__init__()
        self.obs_norm = RunningMeanStd(obs_dim, obs_clip)
        self.actor_mean = _mlp(obs_dim, hidden, action_dim, output_gain=0.01)
        self.actor_log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))
        self.critic = _mlp(obs_dim, hidden, 1, output_gain=1.0)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.obs_norm(obs)).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor_mean(self.obs_norm(obs)), self.actor_log_std.expand(*obs.shape[:-1], -1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        mean, log_std = self.distribution(obs)
        return mean if deterministic else mean + torch.randn_like(mean) * log_std.exp()


# --- reward sources ------------------------------------------------------------------------

class TrueReward:
    """The env's own reward (the baseline)."""

    name = "true"

    def __call__(self, obs: np.ndarray, actions: np.ndarray, true_rewards: np.ndarray) -> np.ndarray:
        return true_rewards


class LearnedReward:
    """Mean of a reward ensemble's normalised per-step predictions on (obs, action) features."""

    name = "learned"

    def __init__(self, ensemble):
        self.ensemble = ensemble

    def __call__(self, obs: np.ndarray, actions: np.ndarray, true_rewards: np.ndarray) -> np.ndarray:
        features = torch.from_numpy(np.concatenate([obs, actions], axis=-1).astype(np.float32))
        mean, _std = self.ensemble.predict(features, batch_size=8192)
        return mean.numpy().astype(np.float64)


# --- rollouts ------------------------------------------------------------------------------

@dataclass
class Rollout:
    """Arrays of shape (num_envs, steps, ...), steps = whole episodes back to back."""

    obs: np.ndarray
    actions: np.ndarray  # executed actions, clipped to [-1, 1]: the reward model's input
    raw_actions: np.ndarray  # sampled Gaussian actions: PPO's log-probs must use these, not the clipped ones
    true_rewards: np.ndarray
    success: np.ndarray  # (E, steps) task success flag after each step
    qpos: np.ndarray  # state after each action (for rendering segments)
    qvel: np.ndarray
    mocap_pos: np.ndarray
    final_obs: np.ndarray  # (E, episodes, obs_dim): last observation of each episode
    horizon: int

    def episodes(self) -> dict[str, np.ndarray]:
        """Same arrays as (num_episodes, H, ...): the input of `robot.segments.sample_segments`."""
        def split(x):
            return x.reshape(x.shape[0] * (x.shape[1] // self.horizon), self.horizon, *x.shape[2:])
        return {name: split(getattr(self, name)) for name in
                ("obs", "actions", "raw_actions", "true_rewards", "success", "qpos", "qvel", "mocap_pos")}

    def episode_returns(self) -> np.ndarray:
        return self.episodes()["true_rewards"].sum(-1)

    def final_success(self) -> np.ndarray:
        return self.episodes()["success"][:, -1]


def collect_rollout(envs: Iiwa14VecEnv, agent: Agent, obs: np.ndarray, num_episodes: int,
                    deterministic: bool = False, random_actions: np.random.Generator | None = None) -> tuple[Rollout, np.ndarray]:
    """Run `num_episodes` whole episodes per sub-env from `obs` (an episode start).

    Returns the rollout and the observation to continue from. `random_actions` (a numpy
    generator) replaces the policy by uniform random actions."""
    horizon = envs.max_episode_steps
    steps, n = num_episodes * horizon, envs.num_envs
    record = {name: [] for name in ("obs", "actions", "raw_actions", "true_rewards", "success", "qpos", "qvel", "mocap_pos")}
    final_obs = []
    for _ in range(steps):
        if random_actions is not None:
            action = random_actions.uniform(-1, 1, size=(n, envs.single_action_space.shape[0])).astype(np.float32)
        else:
            action = agent.act(torch.from_numpy(obs), deterministic).numpy()
        next_obs, _reward, _terminated, truncated, info = envs.step(action)
        done = info["_final_obs"]
        qpos, qvel, mocap = envs.qpos, envs.qvel, envs.mocap_pos
        if done.any():  # auto-reset already happened: the finished episode's last state is in info
            qpos[done] = info["final_qpos"][done]
            mocap[done] = info["final_mocap_pos"][done]
            # info has no final qvel; the arm's joint velocities are obs[7:14] of the final obs
            qvel[done] = 0.0
            qvel[done, :7] = info["final_obs"][done, 7:14]
            final_obs.append(info["final_obs"].copy())
        record["obs"].append(obs)
        record["actions"].append(np.clip(action, -1, 1))  # the env clips; features see the executed action
        record["raw_actions"].append(action)
        record["true_rewards"].append(info["true_reward"])
        record["success"].append(info["success"])
        record["qpos"].append(qpos)
        record["qvel"].append(qvel)
        record["mocap_pos"].append(mocap)
        obs = next_obs
    arrays = {name: np.stack(values, axis=1) for name, values in record.items()}
    if len(final_obs) != num_episodes:
        raise RuntimeError("sub-envs are out of step with episode boundaries; reset all envs together")
    return Rollout(**arrays, final_obs=np.stack(final_obs, axis=1), horizon=horizon), obs


# --- PPO -----------------------------------------------------------------------------------

def track_rollout(learner, rollout: Rollout, stats: dict, keep_last: int, progress) -> None:
    """After each training rollout of either learner (PPO, robot.sac.SAC): keep the last
    `keep_last` rollouts in `learner.recent_rollouts` (segments of the current policy) and
    advance the progress bar by the rollout's env steps, showing its return and success."""
    if keep_last:
        learner.recent_rollouts = (learner.recent_rollouts + [rollout])[-keep_last:]
    if progress is not None:
        progress.update(learner.batch_steps)
        progress.set_postfix(ret=f"{stats['true_return']:.1f}", succ=f"{stats['success']:.2f}")


class PPO:
    """Owns the envs, the agent and its optimiser; `train(steps, reward_fn)` runs PPO updates."""

    def __init__(self, config, envs: Iiwa14VecEnv | None = None, seed: int | None = None):
        self.config = config
        self.seed = config.seed if seed is None else seed
        self.envs = envs or make_vec_env(config.task, config.num_envs)
        torch.manual_seed(self.seed)
        obs_dim = self.envs.single_observation_space.shape[0]
        self.action_dim = self.envs.single_action_space.shape[0]
        self.agent = Agent(obs_dim, self.action_dim, config.hidden_size, config.init_log_std, config.obs_clip)
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=config.learning_rate, eps=1e-5)
        self.obs, _ = self.envs.reset(seed=self.seed)
        self.timesteps = 0  # env steps used by PPO updates
        self.batch_steps = config.num_envs * config.episodes_per_rollout * self.envs.max_episode_steps
        self.recent_rollouts: list[Rollout] = []  # kept for sampling segments of the current policy

    def rollout(self, random_policy: np.random.Generator | None = None) -> Rollout:
        rollout, self.obs = collect_rollout(self.envs, self.agent, self.obs, self.config.episodes_per_rollout,
                                            random_actions=random_policy)
        return rollout

    def train(self, num_steps: int, reward_fn, keep_last: int = 0, progress=None) -> list[dict]:
        """PPO updates until `num_steps` more env steps are used; returns per-update stats.

        keep_last: how many of the last rollouts to keep in `recent_rollouts`."""
        stats, target = [], self.timesteps + num_steps
        self.recent_rollouts = []
        while self.timesteps < target:
            rollout = self.rollout()
            self.timesteps += self.batch_steps
            stats.append(self.update(rollout, reward_fn))
            track_rollout(self, rollout, stats[-1], keep_last, progress)
        return stats

    def update(self, rollout: Rollout, reward_fn) -> dict:
        cfg, agent = self.config, self.agent
        horizon = rollout.horizon
        episodes = rollout.episodes()
        obs = torch.from_numpy(episodes["obs"])  # (B, H, D), B = episodes
        actions = torch.from_numpy(episodes["raw_actions"])
        rewards = torch.as_tensor(reward_fn(episodes["obs"], episodes["actions"], episodes["true_rewards"]),
                                  dtype=torch.float32)
        final_obs = torch.from_numpy(rollout.final_obs.reshape(-1, rollout.final_obs.shape[-1]))

        # Statistics move once per rollout; old log-probs/values are recomputed under them so
        # the first PPO epoch starts at ratio 1.
        agent.obs_norm.update(obs)
        with torch.no_grad():
            mean, log_std = agent.distribution(obs)
            old_logprobs = gaussian_log_prob(mean, log_std, actions)
            old_values = agent.value(obs)
            bootstrap = agent.value(final_obs) if cfg.bootstrap_truncated else None
        advantages, returns = compute_gae(rewards, old_values, gamma=cfg.gamma, lam=cfg.gae_lambda,
                                          bootstrap_value=bootstrap)

        # Linear learning-rate annealing over the whole run (CleanRL).
        frac = max(0.0, 1.0 - (self.timesteps - self.batch_steps) / cfg.total_timesteps)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.learning_rate * frac

        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        b_obs, b_actions, b_logprobs = flat(obs), flat(actions), flat(old_logprobs)
        b_adv, b_returns, b_values = flat(advantages), flat(returns), flat(old_values)
        batch = b_obs.shape[0]
        minibatch = max(1, batch // cfg.num_minibatches)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.timesteps)
        clip_fracs, kls = [], []
        for _ in range(cfg.update_epochs):
            order = torch.randperm(batch, generator=generator)
            for start in range(0, batch, minibatch):
                idx = order[start:start + minibatch]
                mean, log_std = agent.distribution(b_obs[idx])
                logprobs = gaussian_log_prob(mean, log_std, b_actions[idx])
                pg_loss, pg_stats = policy_loss(logprobs, b_logprobs[idx], whiten(b_adv[idx]), clip_range=cfg.clip_range)
                v_loss, _ = value_loss(agent.value(b_obs[idx]), b_values[idx], b_returns[idx],
                                       clip_range_value=cfg.clip_range_value)
                entropy = gaussian_entropy(agent.actor_log_std)
                loss = pg_loss + cfg.value_coef * v_loss - cfg.entropy_coef * entropy
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                clip_fracs.append(pg_stats["clip_fraction"].item())
                kls.append(pg_stats["approx_kl"].item())
        return {
            "timesteps": self.timesteps,
            "true_return": float(rollout.episode_returns().mean()),
            "success": float(rollout.final_success().mean()),
            "optimised_return": float(rewards.sum(-1).mean()),
            "clip_fraction": float(np.mean(clip_fracs)),
            "approx_kl": float(np.mean(kls)),
            "explained_variance": float(explained_variance(b_values, b_returns)),
            "log_std": float(agent.actor_log_std.detach().mean()),
        }


def evaluate_policy(agent: Agent, task: str, episodes: int, seed: int, deterministic: bool = True,
                    max_envs: int = 32) -> dict:
    """Mean true return and final-step success rate over `episodes` fresh episodes."""
    returns, successes, rollouts = [], [], []
    remaining, batch_seed = episodes, seed
    while remaining > 0:
        envs = make_vec_env(task, min(max_envs, remaining))
        obs, _ = envs.reset(seed=batch_seed)
        rollout, _ = collect_rollout(envs, agent, obs, 1, deterministic=deterministic)
        returns.append(rollout.episode_returns())
        successes.append(rollout.final_success())
        rollouts.append(rollout)
        remaining -= envs.num_envs
        batch_seed += envs.num_envs
    returns, successes = np.concatenate(returns), np.concatenate(successes)
    return {"return": float(returns.mean()), "return_std": float(returns.std()),
            "success": float(successes.mean()), "episodes": int(len(returns)), "rollouts": rollouts}
