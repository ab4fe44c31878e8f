"""Soft actor-critic for the iiwa14 tasks, with a replay buffer relabelled by each new reward.

CleanRL's sac_continuous_action (the textbook's ch. 11, Algorithm 11.1; Haarnoja et al.
2018b: twin Q networks, Polyak-averaged targets, a tanh-squashed Gaussian actor and an
automatically tuned entropy temperature), rearranged around the preference loop:

* Rollouts are whole episodes of all sub-envs (`robot.policy.collect_rollout`, the PPO
  learner's), so segments, clips and evaluation are the same for both learners. After each
  rollout the learner takes `sac_updates_per_step` gradient steps per env step.
* The replay buffer keeps (obs, action, next obs) and the true reward; the reward SAC
  learns from is a column that is recomputed for the whole buffer whenever training starts
  against a reward (PEBBLE, Lee et al. 2021, sec. 4.3: relabelling the whole replay buffer
  after each reward-model update), so no transition is ever scored by a stale reward model.
* `pretrain(steps)`: PEBBLE's unsupervised pre-training. The reward is the state entropy
  estimate of each sampled state, its distance to the k-th nearest state in the buffer
  (Lee et al. 2021, sec. 4.1, after Liu & Abbeel 2021), divided by the running std of those
  distances as the official B-Pref code does; the first labelled segments then come from
  diverse behaviour instead of random flailing.

Episodes end only at the time limit, which is not a terminal state of the task, so every
transition bootstraps (no done flag), like `bootstrap_truncated` for PPO.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot.policy import Rollout, RunningMeanStd, collect_rollout, track_rollout
from robot.vec_env import Iiwa14VecEnv, make_vec_env

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # CleanRL's bounds on the actor's log-std


# --- the math, as small pure functions -------------------------------------------------------

def squashed_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) of a = tanh(u), u ~ N(mean, exp(log_std)), summed over action dimensions.

    The change of variables through tanh subtracts sum_i log(1 - tanh(u_i)^2) (Haarnoja et
    al. 2018a, appendix C, eq. 21), written as 2 (log 2 - u - softplus(-2u)) so it stays
    finite where tanh(u) rounds to +-1."""
    gaussian = torch.distributions.Normal(mean, log_std.exp()).log_prob(pre_tanh)
    log_det = 2.0 * (np.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (gaussian - log_det).sum(-1)


def soft_q_target(rewards: torch.Tensor, next_q1: torch.Tensor, next_q2: torch.Tensor, next_log_prob: torch.Tensor,
                  alpha: float | torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (min(Q1', Q2')(s', a') - alpha log pi(a'|s')), a' ~ pi(s') (the textbook,
    eq. 11.5, with the clipped double-Q minimum of Haarnoja et al. 2018b, sec. 5). No done
    flag: the iiwa14 episodes only time out."""
    return rewards + gamma * (torch.minimum(next_q1, next_q2) - alpha * next_log_prob)


def actor_loss(q1: torch.Tensor, q2: torch.Tensor, log_prob: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """J_pi = E[alpha log pi(a|s) - min(Q1, Q2)(s, a)], a = tanh(mu + sigma * eps) (the
    textbook, eq. 11.7-11.8; Haarnoja et al. 2018b, eq. 7)."""
    return (alpha * log_prob - torch.minimum(q1, q2)).mean()


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """J(alpha) = E[-alpha (log pi(a|s) + H_target)] (Haarnoja et al. 2018b, eq. 18); CleanRL
    and B-Pref differentiate through log alpha, which keeps alpha positive."""
    return (-log_alpha.exp() * (log_prob.detach() + target_entropy)).mean()


def knn_distances(states: torch.Tensor, reference: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distance from each state to its k-th nearest neighbour in `reference`,
    counting the state itself when it is in `reference` (B-Pref's `compute_state_entropy`:
    the (k+1)-th smallest distance). Chunked over `reference` to bound memory."""
    dists = torch.cat([torch.cdist(states, reference[start:start + chunk])
                       for start in range(0, reference.shape[0], chunk)], dim=1)
    return torch.kthvalue(dists, k + 1, dim=1).values


# --- networks ------------------------------------------------------------------------------

def _mlp(input_dim: int, hidden: int, output_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, output_dim))


class SoftQ(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.net = _mlp(obs_dim + action_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], -1)).squeeze(-1)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy with a state-dependent std; actions lie in [-1, 1], the
    envs' action box, so no rescaling."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.trunk = _mlp(obs_dim, hidden, 2 * action_dim)

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.trunk(obs).chunk(2, dim=-1)
        # Soft bounds on the log-std (CleanRL): tanh maps into (LOG_STD_MIN, LOG_STD_MAX).
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability."""
        mean, log_std = self.distribution(obs)
        pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, mean, log_std)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """The interface `collect_rollout` and `evaluate_policy` use: tanh(mean) when deterministic."""
        mean, log_std = self.distribution(obs)
        return torch.tanh(mean if deterministic else mean + log_std.exp() * torch.randn_like(mean))


# --- replay buffer ---------------------------------------------------------------------------

class ReplayBuffer:
    """Transitions of whole episodes; `rewards` is the column SAC learns from, rewritten by
    `relabel` (PEBBLE) for every transition at once."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.true_rewards = np.zeros(capacity, np.float64)
        self.rewards = np.zeros(capacity, np.float32)
        self.capacity, self.size, self.position = capacity, 0, 0

    def add_rollout(self, rollout: Rollout) -> np.ndarray:
        """Add every transition of a rollout; returns the buffer rows written (FIFO when full)."""
        episodes = rollout.episodes()
        obs, actions = episodes["obs"], episodes["actions"]  # (B, H, ...)
        final_obs = rollout.final_obs.reshape(-1, 1, obs.shape[-1])
        next_obs = np.concatenate([obs[:, 1:], final_obs], axis=1)  # s' of the last step: the episode's final obs
        count = obs.shape[0] * obs.shape[1]
        rows = (self.position + np.arange(count)) % self.capacity
        self.obs[rows] = obs.reshape(count, -1)
        self.next_obs[rows] = next_obs.reshape(count, -1)
        self.actions[rows] = actions.reshape(count, -1)
        self.true_rewards[rows] = episodes["true_rewards"].reshape(count)
        self.position = (self.position + count) % self.capacity
        self.size = min(self.size + count, self.capacity)
        return rows

    def relabel(self, reward_fn, rows: np.ndarray | None = None) -> None:
        """rewards[rows] = reward_fn(obs, action, true reward) (all stored rows by default)."""
        rows = np.arange(self.size) if rows is None else rows
        if len(rows) == 0:  # nothing stored yet (a reward model may not take an empty batch)
            return
        self.rewards[rows] = reward_fn(self.obs[rows], self.actions[rows], self.true_rewards[rows])

    def sample(self, batch_size: int, generator: np.random.Generator) -> dict[str, torch.Tensor]:
        rows = generator.integers(0, self.size, size=batch_size)
        return {name: torch.from_numpy(getattr(self, name)[rows])
                for name in ("obs", "next_obs", "actions", "rewards")}


# --- the learner ---------------------------------------------------------------------------

class SAC:
    """Owns the envs, actor, twin critics, temperature and replay buffer; the same
    interface as `robot.policy.PPO` (`rollout`, `train`, `agent`, `timesteps`,
    `recent_rollouts`), so `robot.train` runs either."""

    def __init__(self, config, envs: Iiwa14VecEnv | None = None, seed: int | None = None):
        self.config = config
        self.seed = config.seed if seed is None else seed
        self.envs = envs or make_vec_env(config.task, config.num_envs)
        torch.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed + 7)  # minibatches and warm-up actions
        obs_dim = self.envs.single_observation_space.shape[0]
        self.action_dim = self.envs.single_action_space.shape[0]
        hidden = config.sac_hidden_size
        self.agent = Actor(obs_dim, self.action_dim, hidden)
        self.q1, self.q2, self.q1_target, self.q2_target = (SoftQ(obs_dim, self.action_dim, hidden) for _ in range(4))
        self.q1_target.load_state_dict(self.q1.state_dict())
        self.q2_target.load_state_dict(self.q2.state_dict())
        self.q_optimizer = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()],
                                            lr=config.sac_q_learning_rate)
        self.actor_optimizer = torch.optim.Adam(self.agent.parameters(), lr=config.sac_policy_learning_rate)
        self.target_entropy = -float(self.action_dim)  # Haarnoja et al. 2018b: -dim(A)
        self.log_alpha = torch.tensor(float(np.log(config.sac_init_alpha)), requires_grad=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.sac_q_learning_rate)
        self.buffer = ReplayBuffer(config.sac_buffer_size, obs_dim, self.action_dim)
        self.entropy_scale = RunningMeanStd(1)  # running std of the k-NN distances (pretraining)
        self.obs, _ = self.envs.reset(seed=self.seed)
        self.timesteps = 0  # env steps collected for learning (warm-up and pretraining included)
        self.batch_steps = config.num_envs * config.episodes_per_rollout * self.envs.max_episode_steps
        self.recent_rollouts: list[Rollout] = []

    def rollout(self, random_policy: np.random.Generator | None = None) -> Rollout:
        """Episodes of the current actor (or uniform random actions); not stored in the buffer,
        as PPO does not learn from the random-policy rollouts drawn for the first labels."""
        rollout, self.obs = collect_rollout(self.envs, self.agent, self.obs, self.config.episodes_per_rollout,
                                            random_actions=random_policy)
        return rollout

    def train(self, num_steps: int, reward_fn, keep_last: int = 0, progress=None) -> list[dict]:
        """Collect and learn until `num_steps` more env steps are used; returns per-rollout stats.

        The whole buffer is relabelled with `reward_fn` first (it may be a refitted model)."""
        self.buffer.relabel(reward_fn)
        return self._learn(num_steps, reward_fn, keep_last, progress)

    def pretrain(self, num_steps: int, keep_last: int = 0, progress=None) -> list[dict]:
        """PEBBLE's unsupervised phase: `num_steps` env steps maximising the state entropy."""
        return self._learn(num_steps, None, keep_last, progress)

    def _learn(self, num_steps: int, reward_fn, keep_last: int, progress) -> list[dict]:
        cfg = self.config
        stats, target = [], self.timesteps + num_steps
        self.recent_rollouts = []
        while self.timesteps < target:
            warm_up = self.timesteps < cfg.sac_learning_starts
            rollout = self.rollout(random_policy=self.rng if warm_up else None)
            rows = self.buffer.add_rollout(rollout)
            if reward_fn is not None:
                self.buffer.relabel(reward_fn, rows)
            self.timesteps += self.batch_steps
            num_updates = 0 if self.timesteps < cfg.sac_learning_starts else round(self.batch_steps * cfg.sac_updates_per_step)
            updates = [self.update(intrinsic=reward_fn is None) for _ in range(num_updates)]
            row = {"timesteps": self.timesteps, "true_return": float(rollout.episode_returns().mean()),
                   "success": float(rollout.final_success().mean())}
            if updates:
                row.update({name: float(np.mean([u[name] for u in updates])) for name in updates[0]})
            stats.append(row)
            track_rollout(self, rollout, row, keep_last, progress)
        return stats

    def update(self, intrinsic: bool = False) -> dict:
        """One gradient step of the critics, the actor and the temperature on a minibatch."""
        cfg = self.config
        batch = self.buffer.sample(cfg.sac_batch_size, self.rng)
        rewards = self.intrinsic_rewards(batch["obs"]) if intrinsic else batch["rewards"]
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_actions, next_log_prob = self.agent.sample(batch["next_obs"])
            target = soft_q_target(rewards, self.q1_target(batch["next_obs"], next_actions),
                                   self.q2_target(batch["next_obs"], next_actions), next_log_prob, alpha, cfg.gamma)
        q1, q2 = self.q1(batch["obs"], batch["actions"]), self.q2(batch["obs"], batch["actions"])
        q_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.q_optimizer.zero_grad()
        q_loss.backward()
        self.q_optimizer.step()

        actions, log_prob = self.agent.sample(batch["obs"])
        pi_loss = actor_loss(self.q1(batch["obs"], actions), self.q2(batch["obs"], actions), log_prob, alpha)
        self.actor_optimizer.zero_grad()
        pi_loss.backward()
        self.actor_optimizer.step()  # the critics' gradients from this loss are cleared before their next step

        alpha_loss = temperature_loss(self.log_alpha, log_prob, self.target_entropy)
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()

        with torch.no_grad():  # Polyak averaging of the target critics
            for net, target_net in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                for param, target_param in zip(net.parameters(), target_net.parameters()):
                    target_param.lerp_(param, cfg.sac_tau)
        return {"q_loss": q_loss.item(), "actor_loss": pi_loss.item(), "alpha": alpha.item(),
                "entropy": -log_prob.mean().item(), "reward": rewards.mean().item()}

    def intrinsic_rewards(self, obs: torch.Tensor) -> torch.Tensor:
        """PEBBLE's state-entropy reward: k-NN distance in the buffer over its running std."""
        reference = torch.from_numpy(self.buffer.obs[:self.buffer.size])
        distances = knn_distances(obs, reference, self.config.sac_entropy_k)
        self.entropy_scale.update(distances[:, None])
        return distances / torch.sqrt(self.entropy_scale.var[0].float() + 1e-8)
