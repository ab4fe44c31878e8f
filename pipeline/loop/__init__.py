"""The live preference loop (`rlhf loop`): the labelling app, a reward part and a policy part
running at once; see docs/loop.md."""
