"""``ray job submit`` entry point for curation: ``moatforge curate`` on the cluster the job runs on.

    ray job submit --runtime-env jobs/runtime_env.yaml --working-dir . -- \
        python jobs/curate.py curate.input=s3://bucket/exports curate.output=s3://bucket/clean

Inputs and outputs must be reachable from every node (shared storage or object storage).
"""

from __future__ import annotations

import sys

from _entry import run_verb

if __name__ == "__main__":
    sys.exit(run_verb("curate"))
