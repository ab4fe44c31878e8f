"""Serve a labelling project: ``python -m labeling_app --config configs/labeling/<name>.yaml``
(also ``rlhf label ...``).

Binds 127.0.0.1 unless ``--host`` says otherwise (with a warning: the app then faces a
network). Never opens a public share link; Gradio analytics are off. The config, the
sources and the users file are all checked before the server starts.
"""

from __future__ import annotations

import sys

from rlhf.config import ArgumentParser, ConfigError, run_main

from .active import priorities
from .config import load_config
from .sources import SourceError, load_items
from .storage import StorageError
from .users import UserStore, UsersError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m labeling_app",
        description="Serve the preference-labelling app for one project (text pairs, K-way rankings, robot clips).")
    parser.add_argument("--config", required=True, help="project config, e.g. configs/labeling/demo.yaml")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; anything else exposes the app to a network)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860 or $GRADIO_SERVER_PORT)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests handled at once (default 8)")
    parser.add_argument("--check", action="store_true", help="check the config, sources and users, then exit")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.check:  # everything `prepare` checks, without touching the storage
            items = load_items(config)
            UserStore(config.users)
            priorities(config, items)
            print(f"{args.config}: OK ({len(items)} items, overlap {config.overlap})")
            return 0
        from . import app  # imports gradio (seconds): not needed by --check or a bad config

        service = app.prepare(config)  # sources, users and storage: all errors surface here
        if args.host not in LOOPBACK:
            print(f"warning: serving on {args.host}: anyone who can reach this address sees the login page. "
                  "Use HTTPS in front of it and strong passwords.", file=sys.stderr)
        print(f"Labelling project '{config.name}': {len(service.storage.items())} items, "
              f"storage {config.storage}", flush=True)
        app.launch(config, host=args.host, port=args.port, block=True, concurrency=args.concurrency,
                   service=service)
    except (SourceError, UsersError, StorageError) as err:  # bad project files: the one error style
        raise ConfigError(str(err)) from None
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
