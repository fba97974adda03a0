"""``ray job submit`` entry point for fine-tuning: ``moatforge train`` on the cluster the job runs on.

    ray job submit --runtime-env jobs/runtime_env.yaml --working-dir . -- \
        python jobs/finetune.py --config jobs/configs/sft_lora.yaml \
        run.storage_path=/mnt/shared/runs data.train=/mnt/shared/data/train.jsonl cluster.use_gpu=true

Data and ``run.storage_path`` must be reachable from every node (shared storage such as /mnt/shared, or
``s3://``/``gs://``): the working directory is a temporary copy of the source on the cluster.
"""

from __future__ import annotations

import sys

from _entry import run_verb

if __name__ == "__main__":
    sys.exit(run_verb("train"))
