"""Reward models: fit on human preferences (Bradley-Terry, best-of-K, rankings) and evaluate."""
