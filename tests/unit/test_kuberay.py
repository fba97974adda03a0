"""The KubeRay manifests as the API server would take them, without a Kubernetes cluster.

Every overlay is built with ``kubectl kustomize``; every RayCluster/RayJob/RayService validates against the
KubeRay CRD schemas (copied from ../shared/kuberay-crds into tests/data/kuberay-crds) in strict mode after the
schema's defaults are applied; core objects and every pod template validate against the Kubernetes schemas
shipped in ``kubernetes-validate``; then what the schemas cannot say: non-root pods, secrets only by
``secretKeyRef``, the RayService's Serve config generated from serve/student.yaml, scrape targets that exist.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "kuberay"
CRD_COPIES = ROOT / "tests" / "data" / "kuberay-crds"
SHARED_CRDS = ROOT.parent / "shared" / "kuberay-crds"
OVERLAYS = sorted(p.name for p in (KUBERAY / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
K8S_VERSION = "1.32"
SECRET_NAME = re.compile(r"(?i)(^|_)(KEYS?|TOKEN|SECRET|PASSWORD|CREDENTIALS?)($|_)")
KUBECTL = shutil.which("kubectl")

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (for `kubectl kustomize`) is not installed")


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_module(KUBERAY / "gen_rayservice.py", "gen_rayservice")


# --- the schema machinery ----------------------------------------------------------------------------------


def apply_defaults(value, schema: dict):
    """Fill in the OpenAPI v3 ``default``s of a structural schema, in place, the way the API server does.

    The API server defaults a custom resource before it validates it (and again whenever it reads one back),
    so what the operator acts on, and what validation sees, is the defaulted object: ``submissionMode`` that
    was left out is ``K8sJobMode``, a port without ``protocol`` is TCP, a ``ttlSecondsAfterFinished`` left out
    is 0 (delete at once). Validating the manifest as written would check an object the cluster never holds:
    it can hide a default that makes the whole invalid, and it lets assertions about behaviour read values
    the operator never sees. The rules follow Kubernetes' structural defaulting: a property absent (or null
    where the schema is not nullable) takes a copy of its default; defaults only apply inside objects that
    exist; recursion follows ``properties``, ``additionalProperties`` and ``items`` (structural schemas allow
    no defaults under anyOf/allOf/oneOf/not).
    """
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name, sub in props.items():
            missing = name not in value or (value[name] is None and not sub.get("nullable"))
            if missing and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name, sub in props.items():
            if name in value:
                apply_defaults(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                if name not in props:
                    apply_defaults(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


def strict_schema(schema: dict) -> dict:
    """The OpenAPI v3 schema as JSON Schema that rejects unknown fields, like ``kubectl apply --validate=strict``.

    Objects with ``properties`` are closed unless marked ``x-kubernetes-preserve-unknown-fields``; embedded
    resources keep apiVersion/kind/metadata; ``nullable`` becomes a null type.
    """
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: strict_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [strict_schema(v) for v in value]
        else:
            out[key] = value
    if schema.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        for name in ("apiVersion", "kind"):
            props.setdefault(name, {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    closed = not schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and closed:
        out["additionalProperties"] = False
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


_formats = jsonschema.FormatChecker()


@_formats.checks("int32")
def _int32(value) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_formats.checks("int64")
def _int64(value) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


_validators: dict[str, jsonschema.Draft7Validator] = {}


def _raw_schema(kind: str) -> dict:
    return json.loads((CRD_COPIES / f"{kind}.v1.json").read_text())


def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    if kind not in _validators:
        _validators[kind] = jsonschema.Draft7Validator(strict_schema(_raw_schema(kind)), format_checker=_formats)
    return _validators[kind]


def validate_ray_object(doc: dict) -> dict:
    """Defaults first, then strict validation; returns the defaulted object (what the operator reads)."""
    defaulted = apply_defaults(copy.deepcopy(doc), _raw_schema(doc["kind"]))
    errors = sorted(crd_validator(doc["kind"]).iter_errors(defaulted), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])
    return defaulted


# --- rendering ---------------------------------------------------------------------------------------------

_rendered: dict[str, list[dict]] = {}


def render(overlay: str) -> list[dict]:
    if overlay not in _rendered:
        path = KUBERAY / "base" if overlay == "base" else KUBERAY / "overlays" / overlay
        proc = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        _rendered[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return _rendered[overlay]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def cluster_specs(doc: dict) -> list[dict]:
    spec = doc["spec"]
    key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}[doc["kind"]]
    return [spec if key is None else spec[key]]


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod template) for every pod the operator would create from this object."""
    out = []
    for spec in cluster_specs(doc):
        out.append(("head", spec["headGroupSpec"]["template"]))
        out += [(f"worker:{g['groupName']}", g["template"]) for g in spec.get("workerGroupSpecs", [])]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        out.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    return out


def walk(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, (*path, i))


# --- CRD copies --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_CRDS.is_dir(), reason="../shared/kuberay-crds is not beside this checkout")
def test_crd_schema_copies_match_shared():
    extract = _load_module(CRD_COPIES / "extract.py", "extract_crds")
    for kind, name in extract.KINDS.items():
        assert (CRD_COPIES / f"{kind}.v1.json").read_text() == extract.dump(extract.v1_schema(SHARED_CRDS / name)), (
            f"{kind}: run tests/data/kuberay-crds/extract.py"
        )


def test_strict_validation_rejects_unknown_fields_and_bad_types():
    good = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "x"},
        "spec": {"entrypoint": "python x.py", "shutdownAfterJobFinishes": True},
    }
    defaulted = validate_ray_object(good)
    # The API server's defaults, as the operator will read them.
    assert defaulted["spec"]["submissionMode"] == "K8sJobMode" and defaulted["spec"]["ttlSecondsAfterFinished"] == 0
    for bad in (
        {"shutdownAfterJobFinish": True},  # typo: unknown field
        {"ttlSecondsAfterFinished": "600"},  # wrong type
        {"ttlSecondsAfterFinished": 2**31},  # out of int32
    ):
        doc = copy.deepcopy(good)
        doc["spec"].update(bad)
        with pytest.raises(AssertionError):
            validate_ray_object(doc)


@needs_kubectl
def test_strictness_reaches_pod_templates_inside_the_real_manifests():
    (job,) = [d for d in render("gpu") if d["metadata"]["name"] == "moatforge-finetune"]
    for path in (
        ("rayClusterSpec", "workerGroupSpecs", 0, "template", "spec", "containers", 0),
        ("submitterPodTemplate", "spec", "securityContext"),
        ("rayClusterSpec", "autoscalerOptions"),
    ):
        bad = copy.deepcopy(job)
        node = bad["spec"]
        for key in path:
            node = node[key]
        node["misspelled"] = "x"
        with pytest.raises(AssertionError, match="misspelled"):
            validate_ray_object(bad)


def test_defaults_reach_nested_pod_fields():
    doc = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "x"},
        "spec": {
            "headGroupSpec": {
                "template": {"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 1}]}]}}
            }
        },
    }
    port = validate_ray_object(doc)["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert port == {"containerPort": 1, "protocol": "TCP"}


# --- every overlay -----------------------------------------------------------------------------------------


def test_overlays_exist():
    assert {"cpu-dev", "gpu", "gcs-ft"} <= set(OVERLAYS)


@needs_kubectl
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_overlay_builds_and_ray_objects_validate_strictly(overlay):
    docs = render(overlay)
    kinds = [d["kind"] for d in docs]
    assert kinds.count("RayCluster") == 1 and kinds.count("RayJob") == 2 and kinds.count("RayService") == 1, kinds
    for doc in docs:
        if doc["kind"] in RAY_KINDS:
            assert doc["apiVersion"] == "ray.io/v1"
            validate_ray_object(doc)


@needs_kubectl
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_core_objects_and_pod_templates_validate_against_kubernetes(overlay):
    import kubernetes_validate

    docs = render(overlay)
    core = [d for d in docs if d["apiVersion"] in ("v1", "apps/v1", "batch/v1", "networking.k8s.io/v1")]
    assert {d["kind"] for d in core} >= {"ConfigMap", "PersistentVolumeClaim"}
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    for doc in docs:
        if doc["kind"] not in RAY_KINDS:
            continue
        for where, template in pod_templates(doc):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **template.get("metadata", {})}}
            pod["spec"] = template["spec"]
            try:
                kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} {where}: {'.'.join(map(str, exc.path))}: {exc.message}"
                )


def test_kubernetes_validate_works_offline_and_strictly():
    import kubernetes_validate

    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**cm, "dta": {}}, K8S_VERSION, strict=True)


@needs_kubectl
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_pods_run_as_non_root_without_privilege_escalation(overlay):
    checked = 0
    for doc in render(overlay):
        if doc["kind"] not in RAY_KINDS:
            continue
        for where, template in pod_templates(doc):
            spec = template["spec"]
            pod_sc = spec.get("securityContext", {})
            label = f"{doc['kind']}/{doc['metadata']['name']} {where}"
            assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) != 0, label
            assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", label
            assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), label
            for container in spec["containers"] + spec.get("initContainers", []):
                sc = container.get("securityContext", {})
                assert sc.get("allowPrivilegeEscalation") is False, f"{label} {container['name']}"
                assert not sc.get("privileged") and sc.get("runAsUser", 1000) != 0, f"{label} {container['name']}"
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{label} {container['name']}"
                assert not sc.get("capabilities", {}).get("add"), f"{label} {container['name']}"
                assert {"requests", "limits"} <= set(container.get("resources", {})), f"{label}: requests and limits"
                checked += 1
        for spec in cluster_specs(doc):
            autoscaler = spec.get("autoscalerOptions", {}).get("securityContext", {})
            assert autoscaler.get("allowPrivilegeEscalation") is False and autoscaler.get("runAsNonRoot") is True
    assert checked >= 10


@needs_kubectl
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_secrets_only_by_secret_key_ref(overlay):
    docs = render(overlay)
    assert not by_kind(docs, "Secret"), "secrets are created out of band, never shipped in the manifests"
    text = yaml.safe_dump_all(docs)
    assert not re.search(r"\b[0-9a-f]{64}\b|AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY", text)
    env_entries = 0
    for doc in docs:
        for path, node in walk(doc):
            if not (isinstance(node, dict) and "name" in node and ("value" in node or "valueFrom" in node)):
                continue
            if path and path[-2:-1] != ("env",):
                continue
            env_entries += 1
            if SECRET_NAME.search(node["name"]):
                ref = node.get("valueFrom", {}).get("secretKeyRef")
                assert ref and ref.get("name") and ref.get("key") and "value" not in node, (doc["kind"], path, node)
        if doc["kind"] == "RayJob":
            runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
            assert not [k for k in runtime_env.get("env_vars", {}) if SECRET_NAME.search(k)]
    assert env_entries > 10
    for doc in docs:
        if doc["kind"] not in RAY_KINDS:
            continue
        for spec in cluster_specs(doc):
            # Ray token auth: the operator injects the token from this Secret by secretKeyRef.
            assert spec["authOptions"] == {"mode": "token", "secretName": "moatforge-ray-auth"}
            ft = spec.get("gcsFaultToleranceOptions")
            if ft:
                assert "value" not in ft["redisPassword"] and ft["redisPassword"]["valueFrom"]["secretKeyRef"]
        if doc["kind"] == "RayService":
            for where, template in pod_templates(doc):
                env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
                assert env["MOATFORGE_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "moatforge-api-keys", where


# --- Ray-specific shape ------------------------------------------------------------------------------------


def _container(template: dict) -> dict:
    return template["spec"]["containers"][0]


@needs_kubectl
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_ray_clusters_autoscale_with_shm_and_shared_storage(overlay):
    docs = render(overlay)
    pvcs = {d["metadata"]["name"] for d in by_kind(docs, "PersistentVolumeClaim")}
    for doc in docs:
        if doc["kind"] not in RAY_KINDS:
            continue
        spec = cluster_specs(doc)[0]
        assert spec["rayVersion"] == "2.60.0"
        assert spec["enableInTreeAutoscaling"] is True
        for group in spec["workerGroupSpecs"]:
            assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"] or (
                group.get("replicas", 0) == 0 and group["minReplicas"] == 0
            )
        for where, template in pod_templates(doc):
            if where == "submitter":
                continue
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in _container(template)["volumeMounts"]}
            assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", where
            assert volumes[mounts["/mnt/shared"]]["persistentVolumeClaim"]["claimName"] in pvcs, where


@needs_kubectl
def test_gpu_overlay_requests_gpus_and_sets_nccl():
    for doc in render("gpu"):
        if doc["kind"] not in ("RayCluster", "RayJob"):
            continue
        (group,) = cluster_specs(doc)[0]["workerGroupSpecs"]
        container = _container(group["template"])
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1", doc["metadata"]["name"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["NCCL_DEBUG"] and env["NCCL_SOCKET_IFNAME"] and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
        assert group["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    for doc in by_kind(render("gpu"), "RayJob"):
        assert "cluster.use_gpu=true" in doc["spec"]["entrypoint"]
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(render("cpu-dev"))


@needs_kubectl
def test_gcs_ft_overlay_adds_external_redis_to_long_lived_clusters_only():
    docs = render("gcs-ft")
    for doc in docs:
        if doc["kind"] in ("RayCluster", "RayService"):
            ft = cluster_specs(doc)[0]["gcsFaultToleranceOptions"]
            assert re.fullmatch(r"[a-z0-9.-]+:\d+", ft["redisAddress"]), ft
        if doc["kind"] == "RayJob":
            assert "gcsFaultToleranceOptions" not in doc["spec"]["rayClusterSpec"]


@needs_kubectl
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_rayjobs_submit_real_entry_points_with_valid_configs(overlay):
    from ray.runtime_env import RuntimeEnv

    from moatforge.config import load_config

    jobs = by_kind(render(overlay), "RayJob")
    assert {j["metadata"]["name"] for j in jobs} == {"moatforge-finetune", "moatforge-distill"}
    for job in jobs:
        spec = validate_ray_object(job)["spec"]
        assert spec["submissionMode"] == "K8sJobMode"
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
        RuntimeEnv(**yaml.safe_load(spec["runtimeEnvYAML"]))
        argv = shlex.split(spec["entrypoint"])
        assert argv[0] == "python"
        # /home/ray/moatforge in the image (cluster/Dockerfile) is this repository's jobs/ and serve/.
        script = ROOT / Path(argv[1]).relative_to("/home/ray/moatforge")
        assert script.is_file(), argv[1]
        rest = argv[2:]
        config = None
        if rest[:1] == ["--config"]:
            config = ROOT / Path(rest[1]).relative_to("/home/ray/moatforge")
            rest = rest[2:]
        cfg = load_config(config, rest)  # unknown keys or bad values raise here
        assert cfg.run.storage_path.startswith("/mnt/shared/")


# --- RayService from serve/student.yaml --------------------------------------------------------------------


def test_rayservice_is_generated_from_serve_student_yaml():
    assert (KUBERAY / "base" / "rayservice-student.yaml").read_text() == gen.render(), "run `make kuberay`"
    assert gen.main(["--check"]) == 0


def test_serve_config_v2_is_student_yaml_but_for_the_listed_kubernetes_overrides():
    doc = yaml.safe_load((KUBERAY / "base" / "rayservice-student.yaml").read_text())
    served = yaml.safe_load(doc["spec"]["serveConfigV2"])
    source = yaml.safe_load((ROOT / "serve" / "student.yaml").read_text())
    for path, value in gen.K8S_OVERRIDES:
        node_s, node_t = served, source
        for key in path[:-1]:
            node_s, node_t = node_s[key], node_t[key]
        assert node_s[path[-1]] == value
        node_s[path[-1]] = node_t[path[-1]]  # undo the override: the rest must be identical
    assert served == source


def test_serve_config_v2_is_a_valid_serve_deploy_config():
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load((KUBERAY / "base" / "rayservice-student.yaml").read_text())
    config = ServeDeploySchema.model_validate(yaml.safe_load(doc["spec"]["serveConfigV2"]))
    assert config.http_options.host == "0.0.0.0"
    assert [a.import_path for a in config.applications] == ["moatforge.serve:build_app"]


def test_generator_check_notices_a_stale_rayservice(tmp_path, monkeypatch):
    stale = tmp_path / "rayservice.yaml"
    stale.write_text(gen.render().replace("max_batch_size: 32", "max_batch_size: 31"))
    monkeypatch.setattr(gen, "TARGET", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1


# --- monitoring and dashboards -----------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_scrape_targets_name_ports_the_ray_pods_expose(overlay):
    docs = render(overlay)
    (pod_monitor,) = by_kind(docs, "PodMonitor")
    (service_monitor,) = by_kind(docs, "ServiceMonitor")
    pod_port = pod_monitor["spec"]["podMetricsEndpoints"][0]["port"]
    svc_port = service_monitor["spec"]["endpoints"][0]["port"]
    assert service_monitor["spec"]["selector"]["matchLabels"] == {"ray.io/node-type": "head"}
    assert pod_monitor["spec"]["selector"]["matchLabels"]["ray.io/node-type"] == "worker"
    for doc in docs:
        if doc["kind"] not in RAY_KINDS:
            continue
        for spec in cluster_specs(doc):
            groups = [("head", spec["headGroupSpec"], svc_port)]
            groups += [("worker", g, pod_port) for g in spec["workerGroupSpecs"]]
            for where, group, port_name in groups:
                container = _container(group["template"])
                ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                # The port the monitor scrapes is the one Ray exports metrics on.
                assert ports[port_name] == int(group["rayStartParams"]["metrics-export-port"]), where
                labels = group["template"]["metadata"]["labels"]
                if where == "worker":
                    wanted = dict(pod_monitor["spec"]["selector"]["matchLabels"])
                    wanted.pop("ray.io/node-type")  # set on the pods by the operator
                    assert wanted.items() <= labels.items()


@needs_kubectl
def test_grafana_dashboards_configmap_holds_every_dashboard_file():
    (cm,) = [
        d for d in render("gpu") if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("moatforge-grafana")
    ]
    files = sorted(p.name for p in (ROOT / "cluster" / "grafana").glob("*.json"))
    assert files and sorted(cm["data"]) == files, (
        "list every cluster/grafana/*.json in cluster/grafana/kustomization.yaml"
    )
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    for name, text in cm["data"].items():
        dashboard = json.loads(text)
        assert dashboard["title"] and dashboard["panels"], name
