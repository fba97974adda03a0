"""Shared by the ``ray job submit`` entry points in this folder: join the job's cluster, then run a CLI verb.

``ray job submit`` starts the entrypoint on the head node with ``RAY_ADDRESS`` set to that cluster. Each stage
would call ``ray.init()`` itself and join it anyway; connecting here first, to exactly that address, turns a
wrong address into an error instead of a private single-node Ray started by accident, and prints what the job
landed on (nodes, CPUs, GPUs, which moatforge source it runs) as the first line of the job's log.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def join_cluster() -> None:
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        print("[job] RAY_ADDRESS is not set (not under `ray job submit`): the stage starts a local Ray instance")
        return
    if address.startswith(("http://", "https://")):
        sys.exit(
            f"[job] RAY_ADDRESS={address} is a dashboard address, used to submit jobs, not to run them: "
            f"ray job submit --address {address} --working-dir . -- python {sys.argv[0]} ..."
        )
    import ray

    import moatforge
    from moatforge.train.run import ensure_ray

    ensure_ray(address)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    print(
        f"[job] joined the Ray cluster at {address}: {len(nodes)} nodes, {res.get('CPU', 0):g} CPUs, "
        f"{res.get('GPU', 0):g} GPUs; moatforge {moatforge.__version__} from {Path(moatforge.__file__).parent}",
        flush=True,
    )


def run_verb(verb: str, argv: list[str] | None = None) -> int:
    """``python jobs/<stage>.py --config FILE key=value ...`` is ``moatforge <verb> --config FILE key=value ...``."""
    from moatforge.cli import main

    join_cluster()
    return main([verb, *(sys.argv[1:] if argv is None else argv)])
