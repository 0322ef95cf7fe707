"""Deployment files: offline validation of the Kubernetes manifests, the Dockerfile, the CronJob's
DaskJob runner, and real local clusters started by deploy/local/.

- The DaskJob manifests are validated against the CRD schema shipped inside the installed
  ``dask-kubernetes`` package, made strict: the API server silently *prunes* unknown fields of a
  custom resource, so a misspelt field would otherwise vanish without an error.
- Core kinds are validated with ``kubernetes-validate`` (strict) against Kubernetes 1.31 (the
  first release with podFailurePolicy GA) and 1.37 (the newest schemas it ships).
- Consistency checks catch what schemas cannot: one image tag, memory limits everywhere,
  restartPolicy Never, selectors that follow names, copies of job specs that match jobs/*.yaml,
  credentials only by Secret reference.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import kubernetes_validate
import psutil
import pytest
import yaml
from conftest import require_root, require_tool

import nsdist
from nsdist.config import load_config
from killjobs import wait_for_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
K8S_VERSIONS = ("1.31.0", "1.37.0")
IMAGE_REPO = "registry.example.com/nsdist"
UID = 10001  # the Dockerfile's user; the manifests' runAsUser


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


runner = _module("nsdist_daskjob_runner", K8S / "daskjob_runner.py")
local_cluster = _module("nsdist_local_cluster", DEPLOY / "local" / "cluster.py")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


ALL_DOCS = [(p.name, d) for p in MANIFESTS for d in _docs(p)]


def _by_kind(kind: str, file: str | None = None) -> list[dict]:
    return [d for f, d in ALL_DOCS if d["kind"] == kind and (file is None or f == file)]


def _one(kind: str, name: str) -> dict:
    found = [d for d in _by_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def _cron_template() -> dict:
    """The DaskJob template the CronJob's runner creates its DaskJobs from."""
    (cron,) = _by_kind("CronJob")
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    path = args[args.index("--template") + 1]
    cm = _configmap_for_path(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"], path)
    return yaml.safe_load(cm["data"][os.path.basename(path)])


def _configmap_for_path(pod_spec: dict, path: str) -> dict:
    """The ConfigMap whose key provides ``path`` through a volume mount of ``pod_spec``."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for c in pod_spec["containers"]:
        for m in c.get("volumeMounts", []):
            if os.path.dirname(path) == m["mountPath"].rstrip("/"):
                vol = volumes[m["name"]]
                assert "configMap" in vol, f"{path} is not mounted from a ConfigMap"
                cm = _one("ConfigMap", vol["configMap"]["name"])
                assert os.path.basename(path) in cm["data"], f"ConfigMap {cm['metadata']['name']} has no {path}"
                return cm
    raise AssertionError(f"nothing mounts {path}")


def _daskjobs() -> list[tuple[str, dict]]:
    """Every DaskJob: the one-off manifest and the CronJob's template rendered as the runner does."""
    jobs = [(f"{f}:{d['metadata']['name']}", d) for f, d in ALL_DOCS if d["kind"] == "DaskJob"]
    rendered = runner.render(_cron_template(), "nsdist-retrain-20260101t023000-abcd")
    return jobs + [("cronjob.yaml:template", rendered)]


def _pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod a manifest creates, directly or through the operator."""
    if doc["kind"] == "DaskJob":
        c = doc["spec"]["cluster"]["spec"]
        return [("job", doc["spec"]["job"]["spec"]), ("worker", c["worker"]["spec"]),
                ("scheduler", c["scheduler"]["spec"])]
    if doc["kind"] == "CronJob":
        return [("cron", doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])]
    return []


def _all_pod_specs() -> list[tuple[str, dict]]:
    specs = []
    for where, job in _daskjobs():
        specs += [(f"{where}/{w}", s) for w, s in _pod_specs(job)]
    for cron in _by_kind("CronJob"):
        specs += _pod_specs(cron)
    return specs


def _containers() -> list[tuple[str, dict]]:
    return [(f"{w}/{c['name']}", c) for w, s in _all_pod_specs()
            for c in s.get("initContainers", []) + s["containers"]]


# ---------------------------------------------------------------------------- schemas

@pytest.fixture(scope="module")
def daskjob_schema():
    """The DaskJob openAPIV3Schema from the CRD inside the installed dask-kubernetes, made strict.

    The package ships the CRD twice: a source file whose schema is made of `$ref`s resolved at
    build time, and the rendered one in its Helm chart (``crds/daskjob.yaml``); take the rendered one.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    package = Path(importlib.util.find_spec("dask_kubernetes").origin).parent
    for path in sorted(package.rglob("daskjob.yaml")):
        text = path.read_text()
        if "kind: CustomResourceDefinition" in text and "$ref" not in text:
            crd = yaml.load(text, Loader=loader)
            break
    else:
        raise AssertionError(f"no rendered DaskJob CRD in {package}")
    assert crd["spec"]["names"]["kind"] == "DaskJob" and crd["spec"]["group"] == "kubernetes.dask.org"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _strict(schema):
    """additionalProperties: false wherever the API server would prune unknown fields."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _crd_errors(schema: dict, job: dict) -> list[str]:
    assert job["apiVersion"] == "kubernetes.dask.org/v1" and job["kind"] == "DaskJob"
    body = {k: v for k, v in job.items() if k not in ("apiVersion", "kind", "metadata")}
    return [f"{'.'.join(map(str, e.path))}: {e.message}"
            for e in jsonschema.Draft4Validator(schema).iter_errors(body)]


@pytest.mark.parametrize("where, job", _daskjobs(), ids=[w for w, _ in _daskjobs()])
def test_daskjobs_match_the_operator_crd(daskjob_schema, where, job):
    assert _crd_errors(daskjob_schema, job) == []
    # The operator's own name rule (a DaskCluster named after the DaskJob), and room for the
    # "<name>-default-worker-<10 hex>" Deployments it derives from it.
    from dask_kubernetes.constants import VALID_CLUSTER_NAME

    name = job["metadata"]["name"]
    assert VALID_CLUSTER_NAME.match(name) and len(f"{name}-default-worker-0123456789") <= 63, name


def test_strict_crd_schema_catches_typos_and_types(daskjob_schema):
    _, job = _daskjobs()[0]
    bad = copy.deepcopy(job)
    bad["spec"]["job"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert any("imagePullPolcy" in e for e in _crd_errors(daskjob_schema, bad))
    bad = copy.deepcopy(job)
    bad["spec"]["cluster"]["spec"]["worker"]["replicas"] = "4"
    assert any("replicas" in e for e in _crd_errors(daskjob_schema, bad))


CORE = [(f"{f}:{d['kind']}/{d['metadata']['name']}", d) for f, d in ALL_DOCS if d["kind"] != "DaskJob"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("where, doc", CORE, ids=[w for w, _ in CORE])
def test_core_kinds_validate(where, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pods_and_services_inside_daskjobs_validate_as_core_kinds(version):
    """The CRD embeds an older PodSpec; check the pods the operator creates against current ones."""
    for where, job in _daskjobs():
        for role, spec in _pod_specs(job):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"x-{role}"}, "spec": spec}
            kubernetes_validate.validate(pod, version, strict=True)
        service = job["spec"]["cluster"]["spec"]["scheduler"]["service"]
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                                      "spec": service}, version, strict=True)


def test_bad_core_manifest_is_caught():
    (cron,) = _by_kind("CronJob")
    bad = copy.deepcopy(cron)
    bad["spec"]["concurrencyPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_manifest_files_and_kinds():
    assert {p.name for p in MANIFESTS} == {"daskjob.yaml", "cronjob.yaml"}
    kinds = {d["kind"] for _, d in ALL_DOCS}
    assert kinds == {"ConfigMap", "DaskJob", "ServiceAccount", "Role", "RoleBinding", "CronJob"}
    assert not _by_kind("Secret"), "credentials are created out of band (kubectl create secret)"
    namespaces = {d["metadata"].get("namespace") for _, d in ALL_DOCS}
    assert namespaces == {"nsdist"}, namespaces


# ---------------------------------------------------------------------------- consistency

def test_one_image_tag_everywhere_equal_to_the_package_version():
    images = {c["image"] for _, c in _containers()}
    assert images == {f"{IMAGE_REPO}:{nsdist.__version__}"}, images
    assert f"-t {IMAGE_REPO}:{nsdist.__version__} ." in (DEPLOY / "Dockerfile").read_text()
    for _, c in _containers():
        assert c.get("imagePullPolicy") == "IfNotPresent"
        # The image's ENTRYPOINT is tini; `command:` would replace it.
        assert "command" not in c and c["args"], c["name"]


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i|[kMGT])?", str(quantity))
    assert m, quantity
    return int(float(m.group(1)) * units.get(m.group(2) or "", 1))


def test_every_container_has_requests_and_a_memory_limit():
    containers = _containers()
    assert len(containers) == 7  # job, worker, scheduler (x2 DaskJobs) + the cron runner
    for where, c in containers:
        res = c.get("resources", {})
        assert {"cpu", "memory"} <= set(res.get("requests", {})), where
        assert "memory" in res.get("limits", {}), where
        assert _bytes(res["limits"]["memory"]) >= _bytes(res["requests"]["memory"]), where


def test_workers_are_single_threaded_and_spill_before_the_container_limit():
    from dask.utils import parse_bytes

    for where, job in _daskjobs():
        (worker,) = job["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"]
        args = worker["args"]
        assert args[:2] == ["dask", "worker"], where
        opt = {a: args[i + 1] for i, a in enumerate(args) if a.startswith("--") and i + 1 < len(args)}
        assert opt["--nthreads"] == "1" and opt["--nworkers"] == "1", where
        assert opt["--name"] == "$(DASK_WORKER_NAME)", where  # the operator's name for the pod
        limit = _bytes(worker["resources"]["limits"]["memory"])
        assert 0.75 * limit <= parse_bytes(opt["--memory-limit"]) < limit, where
        assert opt["--local-directory"].startswith("/tmp/"), where  # the emptyDir
        (scheduler,) = job["spec"]["cluster"]["spec"]["scheduler"]["spec"]["containers"]
        assert scheduler["args"][:2] == ["dask", "scheduler"], where
        job_args = job["spec"]["job"]["spec"]["containers"][0]["args"]
        assert job_args[:2] == ["nsdist", "train"] and "--scheduler" not in job_args, where


def test_daskjob_job_pods_never_restart():
    for where, job in _daskjobs():
        spec = job["spec"]["job"]["spec"]
        assert spec["restartPolicy"] == "Never", where
        assert spec["activeDeadlineSeconds"] > 0, where
    (cron,) = _by_kind("CronJob")
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_selectors_and_references_match_names():
    for where, job in _daskjobs():
        service = job["spec"]["cluster"]["spec"]["scheduler"]["service"]
        assert service["selector"] == {"dask.org/cluster-name": job["metadata"]["name"],
                                       "dask.org/component": "scheduler"}, where
        (scheduler,) = job["spec"]["cluster"]["spec"]["scheduler"]["spec"]["containers"]
        named_ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
        for port in service["ports"]:
            assert named_ports[port["targetPort"]] == port["port"], (where, port)
        assert named_ports["tcp-comm"] == 8786  # DASK_SCHEDULER_ADDRESS names port 8786
    for where, spec in _all_pod_specs():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, (where, m)
            for probe in ("livenessProbe", "readinessProbe"):
                if probe in c:
                    assert c[probe]["httpGet"]["port"] in {p["name"] for p in c["ports"]}, (where, probe)
        for v in volumes.values():
            if "configMap" in v:
                _one("ConfigMap", v["configMap"]["name"])
    (binding,) = _by_kind("RoleBinding")
    role = _one("Role", binding["roleRef"]["name"])
    (subject,) = binding["subjects"]
    sa = _one("ServiceAccount", subject["name"])
    assert subject["namespace"] == sa["metadata"]["namespace"] == role["metadata"]["namespace"]
    (cron,) = _by_kind("CronJob")
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_the_runner_role_allows_exactly_what_the_runner_calls():
    (role,) = _by_kind("Role")
    allowed = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert allowed == {("kubernetes.dask.org", "daskjobs", v) for v in ("create", "get", "delete")} | {
        ("", "pods", "get"), ("", "pods/log", "get")}


def _normalised(job: dict) -> dict:
    """A DaskJob without what legitimately differs between the one-off job and the retrain."""
    job = copy.deepcopy(job)
    job.pop("metadata")
    job["spec"]["cluster"]["spec"]["scheduler"]["service"]["selector"].pop("dask.org/cluster-name")
    spec = job["spec"]["job"]["spec"]
    spec["containers"][0].pop("args")
    for v in spec["volumes"]:
        if "configMap" in v:
            v["configMap"].pop("name")
    return job


def test_cron_template_is_the_daskjob_with_the_retrain_command():
    (one_off,) = _by_kind("DaskJob")
    template = _cron_template()
    assert _normalised(template) == _normalised(one_off), "cronjob.yaml's template drifted from daskjob.yaml"
    args = template["spec"]["job"]["spec"]["containers"][0]["args"]
    assert args == ["nsdist", "train", "--config", "/etc/nsdist/daily-retrain.yaml",
                    "--init-from", "s3://bucket/models/w2v"]


@pytest.mark.parametrize("job_file, spec_file", [
    ("daskjob.yaml", "s3.yaml"), ("cronjob.yaml:template", "daily-retrain.yaml")])
def test_job_spec_configmaps_are_copies_of_jobs_yaml(tmp_path, job_file, spec_file):
    (job,) = [j for w, j in _daskjobs() if w.startswith(job_file)]
    spec = job["spec"]["job"]["spec"]
    container = spec["containers"][0]
    config = container["args"][container["args"].index("--config") + 1]
    cm = _configmap_for_path(spec, config)
    text = cm["data"][os.path.basename(config)]
    assert yaml.safe_load(text) == yaml.safe_load((ROOT / "jobs" / spec_file).read_text()), \
        f"ConfigMap {cm['metadata']['name']} differs from jobs/{spec_file}: copy the file's keys into it"
    # The spec as the pod resolves it: its file plus the container's NSDIST_* variables.
    (tmp_path / "spec.yaml").write_text(text)
    env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("NSDIST_")}
    cfg = load_config(str(tmp_path / "spec.yaml"), environ=env)
    assert cfg.corpus and cfg.out and all(u.startswith("s3://") for u in (*cfg.corpus, cfg.out))
    assert cfg.cluster.wait_for_workers == job["spec"]["cluster"]["spec"]["worker"]["replicas"]
    assert cfg.cluster.scheduler is None  # the operator's DASK_SCHEDULER_ADDRESS decides
    if "--init-from" in container["args"]:
        assert container["args"][container["args"].index("--init-from") + 1] == cfg.out


def test_workers_do_not_pause_at_dasks_memory_threshold():
    """Every worker container turns Dask's pause off (its value parsed as Dask parses it): the
    models live outside the memory Dask manages, so a pause could only stall the job."""
    import dask

    workers = [(w, c) for w, c in _containers() if c["name"] == "worker"]
    assert len(workers) == 2, [w for w, _ in workers]  # the DaskJob's and the CronJob's
    for where, c in workers:
        env = {e["name"]: e["value"] for e in c["env"] if e["name"].startswith("DASK_")}
        assert dask.config.collect_env(env) == {"distributed": {"worker": {"memory": {"pause": False}}}}, where


SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|PRIVATE", re.I)


def test_credentials_only_by_secret_reference():
    for where, c in _containers():
        for e in c.get("env", []):
            if SECRET_NAME.search(e["name"]):
                assert "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), (where, e["name"])
        for src in c.get("envFrom", []):
            assert "configMapRef" not in src, where  # no credentials through ConfigMaps either
    names = {e["name"] for _, c in _containers() for e in c.get("env", [])}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names
    # An access key id, or something shaped like a 40-character secret key assigned to a name.
    key_like = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b|secret\w*\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}\b", re.I)
    files = [*DEPLOY.rglob("*"), *(ROOT / "jobs").glob("*.yaml")]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            assert not key_like.search(path.read_text(errors="replace")), path
    for spec in (ROOT / "jobs").glob("*.yaml"):
        options = yaml.safe_load(spec.read_text()).get("storage_options") or {}
        flat = json.dumps(options).lower()
        assert not any(k in flat for k in ('"key"', '"secret"', '"token"', "aws_secret")), spec


def test_pods_run_as_the_image_user_with_a_read_only_root():
    for where, spec in _all_pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] == UID, where
        tmp_mounts = set()
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["readOnlyRootFilesystem"] is True, where
            tmp_mounts |= {m["name"] for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"}
        if not where.endswith("cron"):  # Dask and numba write under /tmp (NUMBA_CACHE_DIR)
            assert tmp_mounts, where
            assert all("emptyDir" in v for v in spec["volumes"] if v["name"] in tmp_mounts), where
            assert spec.get("automountServiceAccountToken") is False, where


def test_cron_job_policies():
    (cron,) = _by_kind("CronJob")
    s = cron["spec"]
    assert s["concurrencyPolicy"] == "Forbid"
    assert s["successfulJobsHistoryLimit"] >= 1 and s["failedJobsHistoryLimit"] >= 1
    assert 0 < s["startingDeadlineSeconds"]
    job = s["jobTemplate"]["spec"]
    assert 1 <= job["backoffLimit"] <= 5
    (container,) = job["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "nsdist-daskjob-runner"
    assert 0 < float(args[args.index("--timeout") + 1]) < job["activeDeadlineSeconds"]
    # Config and data errors (nsdist exit codes 2, 3) fail the Job at once; others are retried.
    (fail,) = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail["onExitCodes"] == {"containerName": container["name"], "operator": "In", "values": [2, 3]}
    # Names from the prefix fit the operator's limits.
    prefix = args[args.index("--name-prefix") + 1]
    runner.check_name(runner.unique_name(prefix))
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"OWNER_JOB_NAME": "metadata.labels['batch.kubernetes.io/job-name']",
                   "OWNER_JOB_UID": "metadata.labels['batch.kubernetes.io/controller-uid']"}


# ---------------------------------------------------------------------------- Dockerfile

def _dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile():
    ins = _dockerfile()
    assert ins[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1].split(":")[0] == str(UID)
    env = " ".join(arg for op, arg in ins if op == "ENV")
    assert re.search(r"NUMBA_CACHE_DIR=/tmp/\S+", env)  # /tmp: an emptyDir in every DaskJob pod
    assert not SECRET_NAME.search(" ".join(arg for op, arg in ins if op in ("ENV", "ARG"))), \
        "no credentials in the image"
    assert ("ENTRYPOINT", '["/usr/bin/tini", "--"]') in ins
    # Installs nsdist from pyproject (which pins dask == distributed) and the runner the CronJob calls.
    runs = " ".join(arg for op, arg in ins if op == "RUN")
    assert "pip install /tmp/src" in runs
    copies = [arg.split() for op, arg in ins if op == "COPY"]
    allowed = {line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    for parts in copies:
        for src in [p for p in parts[:-1] if not p.startswith("--")]:
            assert (ROOT / src).exists() and src.rstrip("/") in allowed, src
    assert ["--chmod=0755", "deploy/k8s/daskjob_runner.py", "/usr/local/bin/nsdist-daskjob-runner"] in copies
    pyproject = (ROOT / "pyproject.toml").read_text()
    pins = dict(re.findall(r'"(dask|distributed)==([^"]+)"', pyproject))
    import dask
    import distributed

    assert pins["dask"] == pins["distributed"] == dask.__version__ == distributed.__version__


# ---------------------------------------------------------------------------- the CronJob's runner

def test_runner_names_and_rendering():
    import datetime as dt

    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert runner.unique_name("nsdist-retrain", now, "beef") == "nsdist-retrain-20260102t030405-beef"
    assert runner.unique_name("x") != runner.unique_name("x")  # random part: retries in one second differ
    with pytest.raises(runner.Usage, match="shorten --name-prefix"):
        runner.unique_name("a-much-too-long-prefix-for-dask")
    with pytest.raises(runner.Usage):
        runner.unique_name("Upper")
    template = _cron_template()
    before = copy.deepcopy(template)
    owner = runner.owner_reference({"OWNER_JOB_NAME": "nsdist-daily-retrain-29000000", "OWNER_JOB_UID": "u-1"})
    job = runner.render(template, "nsdist-retrain-x", owner)
    assert template == before  # the template is not modified
    assert job["metadata"]["name"] == "nsdist-retrain-x"
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job",
                                                   "name": "nsdist-daily-retrain-29000000", "uid": "u-1",
                                                   "controller": False, "blockOwnerDeletion": False}]
    assert job["spec"]["cluster"]["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == "nsdist-retrain-x"
    assert runner.owner_reference({"OWNER_JOB_NAME": "", "OWNER_JOB_UID": ""}) is None
    with pytest.raises(runner.Usage):
        runner.render({"apiVersion": "v1", "kind": "Pod"}, "x")


def test_runner_in_cluster_api_settings(tmp_path, monkeypatch):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "namespace").write_text("nsdist\n")
    monkeypatch.setattr(runner, "SA_DIR", str(sa))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    args = runner.parse_args(["--template", "t.yaml", "--name-prefix", "p"])
    api = runner.Api.in_cluster(args)
    assert (api.server, api.namespace) == ("https://10.0.0.1:443", "nsdist") and api.context is not None
    assert api.daskjobs("x") == "/apis/kubernetes.dask.org/v1/namespaces/nsdist/daskjobs/x"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    assert runner.Api.in_cluster(args).server == "https://[fd00::1]:443"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(runner.Usage, match="not in a Kubernetes pod"):
        runner.Api.in_cluster(args)


class FakeKube:
    """Just enough of the Kubernetes API for the runner: DaskJobs that progress on each read."""

    def __init__(self, schema, outcome="Successful", exit_code=0, conflicts=0, crd=True, steps=3):
        self.schema, self.outcome, self.exit_code = schema, outcome, exit_code
        self.conflicts, self.crd, self.steps = conflicts, crd, steps
        self.jobs: dict[str, dict] = {}
        self.reads: dict[str, int] = {}
        self.created: list[dict] = []
        self.deleted: list[str] = []
        self.unauthorised = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method):
                if self.headers.get("Authorization") != "Bearer t0ken":
                    fake.unauthorised += 1
                    return self._send(401, {"message": "Unauthorized"})
                url = urllib.parse.urlparse(self.path)
                base = "/apis/kubernetes.dask.org/v1/namespaces/ns/daskjobs"
                if url.path == base and method == "POST":
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    return self._send(*fake.create(body))
                if url.path.startswith(base + "/"):
                    name = url.path[len(base) + 1:]
                    if method == "GET":
                        return self._send(*fake.get(name))
                    if method == "DELETE":
                        fake.deleted.append(name)
                        return self._send(200, {}) if fake.jobs.pop(name, None) else self._send(404, {})
                m = re.fullmatch(r"/api/v1/namespaces/ns/pods/(.+)-runner(/log)?", url.path)
                if m and method == "GET":
                    return self._send(*fake.pod(m.group(1), bool(m.group(2))))
                return self._send(404, {"message": "no route"})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def create(self, body):
        if not self.crd:
            return 404, {"message": "the server could not find the requested resource"}
        errors = _crd_errors(self.schema, body)
        if errors:
            return 422, {"message": "; ".join(errors)}
        if self.conflicts:
            self.conflicts -= 1
            return 409, {"message": "already exists"}
        self.jobs[body["metadata"]["name"]] = body
        self.created.append(body)
        return 201, body

    def status(self, name):
        n = self.reads.get(name, 1) - 1  # as of the latest read of the DaskJob
        if self.steps is None or n < self.steps:
            return ["JobCreated", "ClusterCreated", "Running"][min(n, 2)]
        return self.outcome

    def get(self, name):
        if name not in self.jobs:
            return 404, {"message": "not found"}
        self.reads[name] = self.reads.get(name, 0) + 1
        return 200, {**self.jobs[name], "status": {"jobStatus": self.status(name)}}

    def pod(self, name, log):
        if name not in self.jobs:
            return 404, {"message": "not found"}
        if log:
            return 200, '{"message": "epoch 1 loss 3.2"}\ns3://bucket/models/w2v/runs/r1\n'
        status = self.status(name)
        if status in ("Successful", "Failed"):
            state = {"terminated": {"exitCode": self.exit_code, "reason": "Completed" if not self.exit_code else "Error"}}
            return 200, {"status": {"phase": "Succeeded" if not self.exit_code else "Failed",
                                    "containerStatuses": [{"name": "job", "state": state}]}}
        return 200, {"status": {"phase": "Running" if status == "Running" else "Pending",
                                "containerStatuses": [{"name": "job", "state": {"running": {}}}]}}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kube(daskjob_schema):
    fakes = []

    def make(**kw):
        fakes.append(FakeKube(daskjob_schema, **kw))
        return fakes[-1]

    yield make
    for f in fakes:
        f.close()


@pytest.fixture
def template_file(tmp_path):
    path = tmp_path / "daskjob.yaml"
    path.write_text(yaml.safe_dump(_cron_template()))
    (tmp_path / "token").write_text("t0ken\n")
    return path


def _run_runner(fake, template_file, *extra):
    args = ["--template", str(template_file), "--name-prefix", "nsdist-retrain", "--server", fake.url,
            "--namespace", "ns", "--token-file", str(template_file.parent / "token"), "--poll", "0.01", *extra]
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        return runner.main(args)
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])


def test_runner_success_creates_a_unique_daskjob_waits_copies_the_log_and_cleans_up(
        kube, template_file, capsys, monkeypatch):
    monkeypatch.setenv("OWNER_JOB_NAME", "nsdist-daily-retrain-29000000")
    monkeypatch.setenv("OWNER_JOB_UID", "0b7c-uid")
    fake = kube(conflicts=1)
    assert _run_runner(fake, template_file) == 0
    (job,) = fake.created  # the first name "existed" (409): a new one was drawn
    name = job["metadata"]["name"]
    assert re.fullmatch(r"nsdist-retrain-\d{8}t\d{6}-[0-9a-f]{4}", name)
    assert job["spec"]["cluster"]["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == name
    assert job["metadata"]["ownerReferences"][0]["uid"] == "0b7c-uid"
    assert fake.deleted == [name] and not fake.jobs
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "s3://bucket/models/w2v/runs/r1"  # the training log, copied
    events = [json.loads(line) for line in err.splitlines()]
    assert [e["status"] for e in events if e["message"] == "progress"] == [
        "JobCreated", "ClusterCreated", "Running", "Successful"]
    assert fake.unauthorised == 0


@pytest.mark.parametrize("exit_code, expected", [(3, 3), (75, 75), (0, 1)])
def test_runner_failure_exits_with_the_training_exit_code(kube, template_file, exit_code, expected):
    fake = kube(outcome="Failed", exit_code=exit_code)
    assert _run_runner(fake, template_file) == expected
    assert len(fake.deleted) == 1 and not fake.jobs


def test_runner_keep_failed_and_timeout(kube, template_file):
    fake = kube(outcome="Failed", exit_code=1)
    assert _run_runner(fake, template_file, "--keep-failed") == 1
    assert fake.deleted == [] and len(fake.jobs) == 1
    stuck = kube(steps=None)  # never finishes: e.g. an image that cannot be pulled
    assert _run_runner(stuck, template_file, "--timeout", "0.2") == 1
    assert len(stuck.deleted) == 1 and not stuck.jobs


def test_runner_setup_errors_do_not_retry(kube, template_file, tmp_path):
    assert _run_runner(kube(crd=False), template_file) == 2  # no operator installed
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\n")
    fake = kube()
    assert _run_runner(fake, bad) == 2 and not fake.created
    assert _run_runner(fake, template_file, "--name-prefix", "x" * 30) == 2 and not fake.created
    broken = yaml.safe_load(template_file.read_text())
    broken["spec"]["job"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    bad.write_text(yaml.safe_dump(broken))
    assert _run_runner(fake, bad) == 2 and not fake.created  # 422 from the API server
    (template_file.parent / "token").write_text("wrong\n")
    assert _run_runner(fake, template_file) == 2 and fake.unauthorised


def test_runner_sigterm_deletes_its_daskjob(kube, template_file):
    """activeDeadlineSeconds or a deleted Job sends SIGTERM: the DaskJob must not outlive the run."""
    fake = kube(steps=None)
    proc = subprocess.Popen(
        [sys.executable, str(K8S / "daskjob_runner.py"), "--template", str(template_file),
         "--name-prefix", "nsdist-retrain", "--server", fake.url, "--namespace", "ns",
         "--token-file", str(template_file.parent / "token"), "--poll", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not fake.reads and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.reads, proc.stderr.read() if proc.poll() is not None else "runner never polled"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143, err
    assert len(fake.deleted) == 1 and not fake.jobs


# ---------------------------------------------------------------------------- local clusters

def _tree(pids: list[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return procs


def _gone(procs: list[psutil.Process]) -> bool:
    def alive(p):
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return not any(alive(p) for p in procs)


def test_local_cluster_runs_tasks_and_stops_every_process():
    from distributed import Client

    address, stop = local_cluster.start_cluster(workers=2, threads=1, env={"LOCAL_CLUSTER_TEST_MARK": "x"})
    try:
        assert address.startswith("tcp://127.0.0.1:")
        assert len(stop.worker_pids) == 2 and all(psutil.pid_exists(p) for p in stop.pids)
        procs = _tree(stop.pids)
        assert len(procs) >= 5  # scheduler, 2 nannies, 2 worker processes
        with Client(address, timeout=30) as client:
            assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
            info = client.scheduler_info()["workers"].values()
            assert sorted(w["name"] for w in info) == ["worker-0", "worker-1"]
            assert all(w["nthreads"] == 1 for w in info)
            assert set(client.run(os.getenv, "LOCAL_CLUSTER_TEST_MARK").values()) == {"x"}
        worker_procs = stop.worker_process_pids()
        assert set(worker_procs) == {"worker-0", "worker-1"}
        assert all(any(p.pid == pid for p in procs) for pid in worker_procs.values())
    finally:
        stop()
    deadline = time.monotonic() + 10
    while not _gone(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(procs), [p.pid for p in procs if p.is_running()]
    assert not stop.directory.exists()


def test_local_cluster_start_failure_cleans_up():
    with pytest.raises(local_cluster.ClusterStartError, match="worker-0"):
        local_cluster.start_cluster(workers=1, timeout=30, worker_args=["--memory-limit", "lots"])
    with pytest.raises(ValueError):
        local_cluster.start_cluster(workers=1, threads=0)
    assert not local_cluster._LIVE


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_scripts_start_a_cluster_with_s3_and_stop_everything(tmp_path):
    """start-s3.sh + start-cluster.sh: workers inherit the S3 endpoint; the stop scripts end it all."""
    from distributed import Client

    scripts = DEPLOY / "local"
    for script in scripts.glob("*.sh"):
        assert os.access(script, os.X_OK), script
        subprocess.run(["bash", "-n", str(script)], check=True)
    # Only the scripts' own S3 settings: no inherited endpoint, credentials, AWS files or scheduler.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_", "DASK_SCHEDULER"))}
    env.update(PYTHON=sys.executable, LOCAL_CLUSTER_DIR=str(tmp_path / "local"), AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    expected = {"AWS_ENDPOINT_URL": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    env.update(expected)  # known in advance (-p PORT), so S3 and the cluster start side by side
    procs = []
    try:
        s3 = subprocess.Popen([str(scripts / "start-s3.sh"), "-p", str(port), "-b", "bucket"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cluster = subprocess.Popen([str(scripts / "start-cluster.sh"), "-n", "2"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        s3_out, s3_err = s3.communicate(timeout=60)
        assert s3.returncode == 0, s3_err
        assert dict(re.findall(r"^export (\w+)=(\S+)$", s3_out, re.M)) == expected  # eval-able
        out, err = cluster.communicate(timeout=90)
        assert cluster.returncode == 0, err
        address = out.strip()
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", address), out
        local = tmp_path / "local"
        pids = [int((local / f"{n}.pid").read_text()) for n in ("moto", "scheduler", "worker-0", "worker-1")]
        procs = _tree(pids)

        def write_from_worker(name):  # a worker reaches the local S3 through the inherited env
            import fsspec

            with fsspec.open(f"s3://bucket/{name}", "wb") as f:
                f.write(b"from a worker")
            return name

        with Client(address, timeout=30) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            assert client.submit(write_from_worker, "w.txt").result(timeout=60) == "w.txt"
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
        assert fs.cat("bucket/w.txt") == b"from a worker"
        fs.clear_instance_cache()
    finally:
        subprocess.run([str(scripts / "stop-cluster.sh")], env=env, capture_output=True, timeout=60)
        subprocess.run([str(scripts / "stop-s3.sh")], env=env, capture_output=True, timeout=60)
    deadline = time.monotonic() + 10
    while not _gone(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs and _gone(procs)
    assert not list((tmp_path / "local").glob("*.pid"))


def test_start_s3_without_moto_fails_at_once_and_so_does_eval(tmp_path):
    """An interpreter without moto's server: one line naming the fix, within seconds, and the
    documented `eval "$(start-s3.sh)"` fails too (the script prints `false` on stdout)."""
    bare = tmp_path / "bare-python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")  # no site-packages: no moto
    bare.chmod(0o755)
    env = {**os.environ, "PYTHON": str(bare), "LOCAL_CLUSTER_DIR": str(tmp_path / "local")}
    t0 = time.monotonic()
    done = subprocess.run(["bash", "-c", f'eval "$({DEPLOY / "local" / "start-s3.sh"})"'], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and time.monotonic() - t0 < 10
    assert "moto's server is not installed" in done.stderr and "pip install 'moto[server]'" in done.stderr
    assert not (tmp_path / "local" / "moto.pid").exists()


def test_pod_eviction_sigterm_reaches_the_job_through_tini(tmp_path):
    """What Kubernetes does to an evicted or deleted pod: SIGTERM to the container's PID 1 (the
    image's ENTRYPOINT, tini), SIGKILL after the grace period (30 s by default). Emulated with
    the same tini as PID 1 of a new PID namespace, running the job as the pod's container does:
    the job must stop within the grace period with exit 143 and its resume command."""
    import json as _json

    from nsdist.synth import generate

    tini = require_tool("tini", why="the image's PID 1, which this test runs the job under (apt-get install tini)")
    unshare = require_tool("unshare", why="a new PID namespace for tini (util-linux)")
    require_root(why="unshare --pid, a PID namespace of the test's own")
    entrypoint = _json.loads(dict(_dockerfile())["ENTRYPOINT"])
    assert os.path.basename(entrypoint[0]) == "tini", entrypoint
    entrypoint[0] = tini
    corpus = generate(str(tmp_path / "corpus.txt"), tokens=400_000, seed=3).corpus
    out = str(tmp_path / "out")
    job = [sys.executable, "-m", "nsdist", "train", "--corpus", corpus, "--out", out, "--workers", "2",
           "--set", "dim=32", "--set", "epochs=30", "--set", "min_count=2"]
    pod = subprocess.Popen([unshare, "--pid", "--fork", "--mount-proc", *entrypoint, *job],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(pod, out, poll=0.05)
    init = psutil.Process(pod.pid).children()  # unshare's child: PID 1 of the namespace
    assert len(init) == 1 and init[0].name() == os.path.basename(entrypoint[0])
    evicted = time.time()
    init[0].send_signal(signal.SIGTERM)
    _, stderr = pod.communicate(timeout=120)
    assert time.time() - evicted < 30, "the job outlived the default grace period: it would be SIGKILLed"
    assert pod.returncode == 143, stderr[-2000:]
    said = [line for line in stderr.splitlines() if line.startswith("nsdist:")]
    assert len(said) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert re.fullmatch(r"nsdist: interrupted: run \S+ stopped after epoch \d+, nothing published; resume with: "
                        r"nsdist train --resume \S+", said[0]), said
    assert not os.path.exists(os.path.join(out, "LATEST"))
