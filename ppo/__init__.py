"""PPO fine-tuning of a language model with a per-token KL penalty and a pretrain-likelihood (ptx) term."""
