"""Copy the ray.io/v1 OpenAPI schemas out of the KubeRay CRDs in ../shared/kuberay-crds/ into this folder.

    .venv/bin/python tests/data/kuberay-crds/extract.py [CRD_DIR]

CI runs on a fresh clone where ../shared may be absent, so the tests read these copies; when ../shared is
there, tests/unit/test_kuberay.py checks the copies still match it. Only the v1 schema of the kinds moatforge
ships is kept (RayCluster, RayJob, RayService), as compact JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[3] / "shared" / "kuberay-crds"
KINDS = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}


def v1_schema(crd_file: Path) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(crd_file.read_text(encoding="utf-8"), Loader=loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def dump(schema: dict) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n"


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT_SOURCE
    for kind, name in KINDS.items():
        (HERE / f"{kind}.v1.json").write_text(dump(v1_schema(source / name)), encoding="utf-8")
        print(f"{kind}: {source / name} -> {HERE / f'{kind}.v1.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
