#!/usr/bin/env python3
"""Run one DaskJob to completion from a CronJob: create it under a unique name, wait, clean up.

Why this exists: a DaskJob has no ``generateName`` (the operator names the cluster, its scheduler
Service and pods after the DaskJob, so the name must be concrete and short) and no
``backoffLimit``; a CronJob can only create batch Jobs. So the CronJob runs this script in a Job;
it creates ``<prefix>-<UTC timestamp>-<random>`` from a template, waits for the operator to report
``Successful`` or ``Failed``, copies the job pod's log into its own, deletes the DaskJob (the
operator's cluster and pods go with it), and exits with the job pod's exit code. Retries,
concurrency and history are then the CronJob's and the Job's business (backoffLimit,
concurrencyPolicy: Forbid, history limits); each retry is a new pod and so a new DaskJob name.

Exit codes follow nsdist's: 0 success; the training pod's own code when it failed (2 config,
3 bad data, 75 transient, 1 other); 2 when the template or the cluster set-up is wrong (no CRD,
no RBAC: retrying will not help); 75 when the Kubernetes API is unreachable; 1 otherwise;
143 when terminated (SIGTERM from activeDeadlineSeconds or a deleted Job), after cleaning up.

Standard library plus PyYAML only (both in the nsdist image); talks to the API server with the
pod's service-account token. Installed in the image as ``nsdist-daskjob-runner``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import re
import secrets
import signal
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import yaml

GROUP_VERSION = "kubernetes.dask.org/v1"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# dask-kubernetes names things after the DaskJob: "<name>-scheduler" (Service, at most 63
# characters) and "<name>-default-worker-<10 hex>" (worker Deployments, used as DNS labels), so a
# name longer than 63 - len("-default-worker-") - 10 = 37 characters breaks the cluster.
MAX_NAME = 63 - len("-default-worker-") - 10
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SUFFIX_LEN = len("-20260101t000000-abcd")
DONE = ("Successful", "Failed")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TRANSIENT, EXIT_TERMINATED = 0, 1, 2, 75, 143


class Usage(Exception):
    """The template, the arguments or the cluster set-up is wrong: retrying will not help."""


class Transient(Exception):
    """The API server could not be reached: worth a retry."""


class Terminated(BaseException):
    """SIGTERM/SIGINT: clean up, then exit 143."""


def log(message: str, **fields: Any) -> None:
    """One JSON line on stderr (the job pod's own log goes to stdout, unchanged)."""
    record = {"time": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "logger": "daskjob-runner", "message": message, **fields}
    print(json.dumps(record), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- names and templates

def unique_name(prefix: str, now: _dt.datetime | None = None, token: str | None = None) -> str:
    """'nsdist-retrain' -> 'nsdist-retrain-20260101t023000-3f9a' (UTC; sortable; unique per attempt)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    token = token if token is not None else secrets.token_hex(2)
    name = f"{prefix}-{now:%Y%m%dt%H%M%S}-{token}"
    check_name(name)
    return name


def check_name(name: str) -> None:
    if len(name) > MAX_NAME or not NAME_RE.match(name):
        raise Usage(
            f"DaskJob name {name!r} is not a lowercase RFC 1123 label of at most {MAX_NAME} "
            f"characters (the operator derives longer names from it); shorten --name-prefix to at "
            f"most {MAX_NAME - SUFFIX_LEN} characters"
        )


def render(template: dict, name: str, owner: dict | None = None) -> dict:
    """The template with its name set everywhere the operator needs it to match.

    The scheduler Service selects pods labelled ``dask.org/cluster-name: <DaskJob name>`` (the
    operator names the cluster after the DaskJob), so the selector must follow the new name or
    the job could never reach its scheduler. The input is not modified.
    """
    if template.get("apiVersion") != GROUP_VERSION or template.get("kind") != "DaskJob":
        raise Usage(f"template must be a {GROUP_VERSION} DaskJob, got {template.get('apiVersion')} "
                    f"{template.get('kind')}")
    job = copy.deepcopy(template)
    meta = job.setdefault("metadata", {})
    meta["name"] = name
    meta.pop("generateName", None)
    meta.pop("namespace", None)  # created in the runner's namespace, where its Role applies
    labels = meta.setdefault("labels", {})
    labels["app.kubernetes.io/instance"] = name
    try:
        service = job["spec"]["cluster"]["spec"]["scheduler"].get("service") or {}
    except (KeyError, AttributeError, TypeError):
        raise Usage("template has no spec.cluster.spec.scheduler") from None
    selector = service.get("selector")
    if selector is not None:
        selector["dask.org/cluster-name"] = name
    if owner:
        meta["ownerReferences"] = [owner]
    return job


def owner_reference(environ: dict) -> dict | None:
    """The Job running this pod as owner: deleting the Job (history limits) deletes the DaskJob.

    This is the safety net when the runner is killed before its own clean-up. Job name and UID
    come from the pod's labels through the downward API (OWNER_JOB_NAME, OWNER_JOB_UID).
    """
    name, uid = environ.get("OWNER_JOB_NAME"), environ.get("OWNER_JOB_UID")
    if not (name and uid):
        return None
    return {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
            "controller": False, "blockOwnerDeletion": False}


def load_template(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
    except OSError as e:
        raise Usage(f"cannot read template {path!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise Usage(f"template {path!r} is not valid YAML: {e}") from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "DaskJob"]
    if len(jobs) != 1:
        raise Usage(f"template {path!r} must hold exactly one DaskJob, found {len(jobs)}")
    return jobs[0]


# ---------------------------------------------------------------------------- the API server

class Api:
    """The few Kubernetes API calls needed, with the in-cluster service-account credentials."""

    def __init__(self, server: str, namespace: str, token_file: str | None, ca_file: str | None,
                 timeout: float = 30.0):
        self.server = server.rstrip("/")
        self.namespace = namespace
        self.token_file = token_file
        self.timeout = timeout
        self.context = None
        if self.server.startswith("https://"):
            self.context = ssl.create_default_context(cafile=ca_file if ca_file and os.path.exists(ca_file) else None)

    @classmethod
    def in_cluster(cls, args) -> "Api":
        server = args.server
        if not server:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise Usage("not in a Kubernetes pod (no KUBERNETES_SERVICE_HOST); pass --server")
            server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        namespace = args.namespace
        if not namespace:
            try:
                with open(os.path.join(SA_DIR, "namespace")) as f:
                    namespace = f.read().strip()
            except OSError:
                raise Usage("no --namespace and no service-account namespace file") from None
        return cls(server, namespace, args.token_file, args.ca_file)

    def request(self, method: str, path: str, body: dict | None = None, query: dict | None = None,
                raw: bool = False) -> Any:
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if self.token_file and os.path.exists(self.token_file):
            with open(self.token_file) as f:  # re-read: projected tokens are rotated
                headers["Authorization"] = "Bearer " + f.read().strip()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        for attempt in range(5):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                    payload = resp.read()
                return payload.decode(errors="replace") if raw else json.loads(payload or b"{}")
            except urllib.error.HTTPError as e:
                if e.code in (429, 500, 502, 503, 504) and attempt < 4:
                    time.sleep(min(2 ** attempt, 10))
                    continue
                raise
            except (urllib.error.URLError, OSError) as e:
                if attempt < 4:
                    time.sleep(min(2 ** attempt, 10))
                    continue
                raise Transient(f"Kubernetes API {self.server} unreachable: {e}") from e
        raise AssertionError("unreachable")

    def daskjobs(self, name: str = "") -> str:
        return f"/apis/{GROUP_VERSION}/namespaces/{self.namespace}/daskjobs" + (f"/{name}" if name else "")

    def pod(self, name: str, sub: str = "") -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{name}" + (f"/{sub}" if sub else "")


def _http_error(e: urllib.error.HTTPError, what: str) -> Exception:
    detail = ""
    try:
        detail = json.loads(e.read() or b"{}").get("message", "")
    except Exception:
        pass
    if e.code == 404:
        return Usage(f"{what}: 404 Not Found; is the dask-kubernetes operator (its DaskJob CRD) "
                     f"installed? {detail}")
    if e.code in (401, 403):
        return Usage(f"{what}: {e.code} {e.reason}; check the runner's ServiceAccount and Role. {detail}")
    if e.code in (400, 422):
        return Usage(f"{what}: the API server rejected the DaskJob: {detail}")
    return Transient(f"{what}: HTTP {e.code} {e.reason} {detail}")


# ---------------------------------------------------------------------------- the run

def create(api: Api, template: dict, prefix: str, owner: dict | None) -> str:
    for _ in range(3):
        name = unique_name(prefix)
        try:
            api.request("POST", api.daskjobs(), render(template, name, owner))
            return name
        except urllib.error.HTTPError as e:
            if e.code == 409:  # that name exists (same second, same token): draw another
                continue
            raise _http_error(e, f"creating DaskJob {name}") from None
    raise Usage(f"could not find a free DaskJob name with prefix {prefix!r}")


def runner_pod_state(api: Api, job_name: str) -> dict:
    """{'phase', 'reason', 'exit_code'} of the job pod '<name>-runner' (empty if not there yet)."""
    try:
        pod = api.request("GET", api.pod(f"{job_name}-runner"))
    except urllib.error.HTTPError:
        return {}
    state: dict[str, Any] = {"phase": pod.get("status", {}).get("phase")}
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        st = cs.get("state") or {}
        if "terminated" in st:
            state["exit_code"] = st["terminated"].get("exitCode")
            state["reason"] = st["terminated"].get("reason")
        elif "waiting" in st:
            state["reason"] = st["waiting"].get("reason")  # e.g. ImagePullBackOff
        if state.get("exit_code"):  # the first failed container decides
            break
    return state


def wait(api: Api, name: str, poll: float, timeout: float) -> tuple[str, dict]:
    deadline = time.monotonic() + timeout if timeout > 0 else None
    seen: tuple = ()
    while True:
        try:
            job = api.request("GET", api.daskjobs(name))
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return "Deleted", runner_pod_state(api, name)
            raise _http_error(e, f"reading DaskJob {name}") from None
        status = (job.get("status") or {}).get("jobStatus") or "Pending"
        pod = runner_pod_state(api, name)
        now = (status, pod.get("phase"), pod.get("reason"))
        if now != seen:
            log("progress", daskjob=name, status=status, pod_phase=pod.get("phase"), pod_reason=pod.get("reason"))
            seen = now
        if status in DONE:
            return status, pod
        if deadline is not None and time.monotonic() > deadline:
            return "TimedOut", pod
        time.sleep(poll)


def copy_log(api: Api, name: str, container: str | None, tail: int) -> None:
    """The job pod's log into this pod's stdout, so it outlives the DaskJob we delete."""
    query: dict[str, Any] = {"tailLines": tail}
    if container:
        query["container"] = container
    try:
        text = api.request("GET", api.pod(f"{name}-runner", "log"), query=query, raw=True)
    except (urllib.error.HTTPError, Transient) as e:
        log("could not read the job pod's log", daskjob=name, error=str(e))
        return
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    sys.stdout.flush()


def delete(api: Api, name: str) -> None:
    try:
        # Background propagation: the operator's DaskCluster and the job pod (owned by the
        # DaskJob) are garbage-collected after it.
        api.request("DELETE", api.daskjobs(name), query={"propagationPolicy": "Background"})
        log("deleted", daskjob=name)
    except urllib.error.HTTPError as e:
        if e.code != 404:
            log("could not delete the DaskJob; the Job's ownerReference will", daskjob=name, error=str(e))
    except Transient as e:
        log("could not delete the DaskJob; the Job's ownerReference will", daskjob=name, error=str(e))


def _terminate(signum, frame):
    raise Terminated(signal.Signals(signum).name)


def run(args, environ=os.environ) -> int:
    api = Api.in_cluster(args)
    template = load_template(args.template)
    unique_name(args.name_prefix, token="0000")  # a bad prefix fails before anything is created
    name = create(api, template, args.name_prefix, owner_reference(environ))
    log("created", daskjob=name, namespace=api.namespace)
    code = EXIT_FAILED
    status = "Unknown"
    try:
        status, pod = wait(api, name, args.poll, args.timeout)
        if status != "Deleted":
            copy_log(api, name, args.container, args.log_lines)
        if status == "Successful":
            code = EXIT_OK
        elif pod.get("exit_code"):
            code = int(pod["exit_code"])
        log("finished", daskjob=name, status=status, exit_code=code, pod_reason=pod.get("reason"))
        return code
    finally:
        if not (args.keep_failed and status != "Successful"):
            delete(api, name)
        else:
            log("kept for inspection (--keep-failed); delete it when done", daskjob=name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nsdist-daskjob-runner", description=__doc__.split("\n\n")[0])
    p.add_argument("--template", required=True, help="YAML file holding one DaskJob (its name is replaced)")
    p.add_argument("--name-prefix", required=True, help=f"DaskJob name prefix (at most {MAX_NAME - SUFFIX_LEN} characters)")
    p.add_argument("--timeout", type=float, default=0, help="seconds to wait before giving up (0: no limit); "
                   "keep it below the Job's activeDeadlineSeconds so the runner cleans up itself")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between status checks")
    p.add_argument("--container", default="job", help="job pod container whose log is copied")
    p.add_argument("--log-lines", type=int, default=2000, help="lines of the job pod's log to copy")
    p.add_argument("--keep-failed", action="store_true", help="leave a failed DaskJob (and its pod) for inspection")
    p.add_argument("--namespace", help="default: the pod's own namespace")
    p.add_argument("--server", help="API server URL (default: in-cluster)")
    p.add_argument("--token-file", default=os.path.join(SA_DIR, "token"))
    p.add_argument("--ca-file", default=os.path.join(SA_DIR, "ca.crt"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        return run(args)
    except Usage as e:
        log(f"error: {e}")
        return EXIT_USAGE
    except Transient as e:
        log(f"error: {e}")
        return EXIT_TRANSIENT
    except Terminated as e:
        log(f"terminated by {e}; cleaned up")
        return EXIT_TERMINATED


if __name__ == "__main__":
    sys.exit(main())
