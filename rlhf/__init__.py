"""The shared preference-learning core: data model, losses, ensembles, simulated labelers, metrics."""

import os

# Nothing reaches the network at run time: models and data come from local files only.
# (Set HF_HUB_OFFLINE=0 yourself to allow downloads.)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__version__ = "0.1.0"
