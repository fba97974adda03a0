"""``ray job submit`` entry point that deploys the OpenAI-compatible app on Ray Serve and returns.

    ray job submit --runtime-env jobs/runtime_env.yaml --working-dir . -- \
        python jobs/deploy.py --config serve/student.yaml \
        serve.model=/mnt/shared/runs/quickstart-student/final/model serve.host=0.0.0.0

Unlike ``moatforge serve`` (which keeps a terminal open until Ctrl-C), the job ends once the application is
running: Serve applications belong to the cluster, not to the driver that deployed them. Redeploying with the
same ``serve.app_name`` updates the application in place; ``serve shutdown`` removes it. The API keys come
from ``MOATFORGE_API_KEYS`` on the cluster's nodes (set it in the runtime env or the node environment).
"""

from __future__ import annotations

import argparse
import sys

from _entry import join_cluster


def main(argv: list[str] | None = None) -> int:
    from moatforge.errors import MoatforgeError
    from moatforge.serve.run import deploy, load_serve_config
    from moatforge.train.run import ensure_ray

    parser = argparse.ArgumentParser(prog="jobs/deploy.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="moatforge config with a serve: group, or a Serve YAML (serve/student.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. serve.model=DIR")
    args = parser.parse_args(argv)
    try:
        cfg = load_serve_config(args.config, args.overrides)
        join_cluster()
        ensure_ray(cfg.cluster.address)
        deploy(cfg)
    except MoatforgeError as exc:
        print(f"jobs/deploy.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
