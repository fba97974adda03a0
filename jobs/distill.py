"""``ray job submit`` entry point for distillation: ``moatforge distill`` on the cluster the job runs on.

    ray job submit --runtime-env jobs/runtime_env.yaml --working-dir . -- \
        python jobs/distill.py distill.teacher=/mnt/shared/runs/sft-lora-smollm2/final/model \
        data.train=/mnt/shared/data/train.jsonl run.storage_path=/mnt/shared/runs cluster.use_gpu=true

The teacher, the data and ``run.storage_path`` must be reachable from every node.
"""

from __future__ import annotations

import sys

from _entry import run_verb

if __name__ == "__main__":
    sys.exit(run_verb("distill"))
