"""The top layer: the `rlhf` command, the demos and the end-to-end pipeline.

It composes the stages (`reward_model`, `ppo`, `robot`, `labeling_app`) by calling their
Python entry points with typed config objects; the stages never import it, and the core
(`rlhf`) imports neither.
"""
