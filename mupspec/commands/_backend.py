"""The --backend and --address options of the commands that run sweeps (torch-free:
the parser is built before any experiment module is imported)."""

from __future__ import annotations

BACKENDS = ("local", "ray")


def add_backend_options(parser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help="where the runs are computed: in this process (local, default) or on a Ray cluster")
    parser.add_argument("--address", default="local", metavar="local|auto|HOST:PORT",
                        help="with --backend ray: 'local' starts a private cluster on this machine (default), "
                        "'auto' joins the one `ray start` made here (or RAY_ADDRESS), HOST:PORT a given head node")
