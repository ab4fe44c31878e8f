"""The shared preference-learning core: data model, losses, ensembles, simulated labelers, metrics.

It knows no stage and no command line; every entry point sets offline-by-default itself
(`rlhf.config.run_main`)."""

__version__ = "0.1.0"
