"""The Kubernetes manifests (docker/k8s: a kustomize base and its overlays), without a cluster.

Every kustomization is rendered (by kustomize or `kubectl kustomize` where there is one, else
by the small renderer here, which knows only what the kustomizations use and is checked against
kustomize where both exist), validated offline against the schemas kubernetes-validate ships,
strictly (no unknown fields), and checked against the CLI it configures. Then shard 0's
container runs here as a process and its probes are asked as the kubelet would ask them.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from asyncrl.common.config import ServerOptions, from_namespace
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc
from deployment import (  # containers: a fixture
    containers,
    CHECKPOINT_ALLOWANCE, CONFIG_CLASSES, ROOT, Container, container_env, dockerfile_instructions, env_read_by,
    free_port, image_entrypoint, image_env, image_user, is_file_setting, run_check, valid_env_names,
)

K8S = ROOT / "docker" / "k8s"
KUSTOMIZATIONS = sorted(path.parent for path in K8S.rglob("kustomization.yaml"))
BASE = K8S / "base"
# The oldest Kubernetes the manifests are written for (the StatefulSet's pod-index label and its PVC retention
# policy are GA from 1.32), and the newest whose schemas kubernetes-validate ships.
OLDEST_KUBERNETES = "1.32"
KUBERNETES_VERSIONS = [OLDEST_KUBERNETES, kubernetes_validate.latest_version()]
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"  # a StatefulSet pod's ordinal, by the downward API
KUBELET_DEFAULT_GRACE = 30.0  # terminationGracePeriodSeconds when a pod says nothing
WORKLOADS = ("StatefulSet", "Deployment")

each_kustomization = pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(K8S)))


# --- rendering -------------------------------------------------------------------------------------------------


def kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def kustomize_cli() -> list[str] | None:
    """`kustomize build` or `kubectl kustomize` (both render offline), if either is on PATH."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        probe = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return ["kubectl", "kustomize"]
    return None


# Strategic merge: lists of these are merged item by item on the key; other lists are replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}
RENDERER_FIELDS = {"apiVersion", "kind", "resources", "images", "configMapGenerator", "replacements", "patches"}


def strategic_merge(target: dict, patch: dict) -> None:
    """patch merged into target as a strategic-merge patch: null deletes, merge-key lists merge by key (the patch's
    new items first, as kustomize puts them), other values replace."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(target.get(key), list):
            merge_key = MERGE_KEYS[key]
            existing = {item[merge_key]: item for item in target[key]}
            for item in value:
                if item[merge_key] in existing:
                    strategic_merge(existing[item[merge_key]], item)
            added = [copy.deepcopy(item) for item in value if item[merge_key] not in existing]
            target[key] = added + target[key]
        else:
            target[key] = copy.deepcopy(value)


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]


def render(directory: Path) -> list[dict]:
    """The kustomization rendered here, for the fields the manifests use (anything else fails, naming the field).

    Generated ConfigMaps keep their plain names: kustomize's hash suffix is left out.
    """
    spec = kustomization(directory)
    unknown = set(spec) - RENDERER_FIELDS
    assert not unknown, f"{directory}/kustomization.yaml: {sorted(unknown)}: extend render() in tests/test_k8s.py"
    docs: list[dict] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        docs += render(path) if path.is_dir() else [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in spec.get("configMapGenerator", []):
        assert set(generator) <= {"name", "literals"}, f"configMapGenerator {generator}: literals only"
        data = dict(literal.split("=", 1) for literal in generator.get("literals", []))
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    for entry in spec.get("patches", []):
        assert set(entry) == {"path"}, f"patches {entry}: strategic-merge patch files only"
        for patch in yaml.safe_load_all((directory / entry["path"]).read_text()):
            targets = find(docs, patch["kind"], patch["metadata"]["name"])
            assert len(targets) == 1, f"{entry['path']}: patches no one {patch['kind']} {patch['metadata']['name']}"
            strategic_merge(targets[0], patch)
    for image in spec.get("images", []):
        for doc in docs:
            for container in pod_spec(doc).get("containers", []) if doc["kind"] in WORKLOADS else []:
                if re.split(r"[:@]", container["image"])[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for replacement in spec.get("replacements", []):
        source = replacement["source"]
        [origin] = find(docs, source["kind"], source["name"])
        value = field(origin, source["fieldPath"])
        for target in replacement["targets"]:
            selected = find(docs, target["select"]["kind"], target["select"].get("name"))
            assert selected, f"replacement target {target['select']} selects nothing"
            for doc in selected:
                for path in target["fieldPaths"]:
                    *parents, last = path.split(".")
                    holder = field(doc, ".".join(parents)) if parents else doc
                    holder[last] = type(holder[last])(value) if last in holder else value  # keeps the field's type
    return docs


def field(doc: dict, path: str):
    assert "[" not in path, f"fieldPath {path}: dotted paths only"
    value = doc
    for part in path.split("."):
        value = value[part]
    return value


def hashed_names_plain(docs: list[dict]) -> list[dict]:
    """kustomize's output with each generated ConfigMap's name-HASH back to name, wherever it is referred to."""
    renamed = {}
    for doc in find(docs, "ConfigMap"):
        name = doc["metadata"]["name"]
        if re.fullmatch(r".+-[a-z0-9]{10}", name):
            renamed[name] = name.rsplit("-", 1)[0]

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return renamed.get(value, value) if isinstance(value, str) else value

    return [plain(doc) for doc in docs]


@cache
def kustomize_output(directory: Path) -> tuple[str, ...] | None:
    cli = kustomize_cli()
    if cli is None:
        return None
    result = subprocess.run([*cli, str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"`{' '.join(cli)} {directory}` failed:\n{result.stderr}"
    return (result.stdout,)


def rendered(directory: Path) -> list[dict]:
    """The kustomization as kustomize renders it where kustomize is here (generated names unhashed), else render()."""
    output = kustomize_output(directory)
    if output is None:
        return render(directory)
    return hashed_names_plain([doc for doc in yaml.safe_load_all(output[0]) if doc])


# --- reading the rendered objects ------------------------------------------------------------------------------


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def containers_of(docs: list[dict]) -> Iterator[tuple[dict, dict]]:
    """(workload, container) for every container of every StatefulSet and Deployment."""
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            for container in pod_spec(doc)["containers"]:
                yield doc, container


def argv_of(container: dict) -> list[str]:
    """What the container runs: the image's entry point and the container's args (or its own command)."""
    command = container.get("command") or image_entrypoint()
    return [*command, *container.get("args", [])]


def subcommand(container: dict) -> str:
    argv = argv_of(container)
    assert argv[:1] == ["asyncrl"] and len(argv) == 2, f"{container['name']}: runs {argv}, not `asyncrl SUBCOMMAND`"
    return argv[1]


def the(docs: list[dict], kind: str) -> dict:
    found = find(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def server_of(docs: list[dict]) -> tuple[dict, dict]:
    statefulset = the(docs, "StatefulSet")
    [container] = [c for c in pod_spec(statefulset)["containers"] if subcommand(c) == "server"]
    return statefulset, container


def probes(container: dict) -> dict[str, dict]:
    return {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in container}


def probe_commands(container: dict) -> list[list[str]]:
    return [probe["exec"]["command"] for probe in probes(container).values() if "exec" in probe]


def container_environment(docs: list[dict], container: dict, ordinal: int = 0) -> dict[str, str]:
    """The container's variables as the kubelet sets them (ConfigMap keys resolved; the pod index is ordinal)."""
    env = {}
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            env[name] = variable["value"]
            continue
        source = variable.get("valueFrom", {})
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            [configmap] = find(docs, "ConfigMap", ref["name"]) or [None]
            assert configmap is not None, f"{name}: no ConfigMap {ref['name']}"
            assert ref["key"] in configmap["data"], f"{name}: ConfigMap {ref['name']} has no key {ref['key']}"
            env[name] = configmap["data"][ref["key"]]
        elif source.get("fieldRef", {}).get("fieldPath") == POD_INDEX:
            env[name] = str(ordinal)
        else:
            raise AssertionError(f"{name}: {variable} (literal values, ConfigMap keys and the pod index only)")
    assert not container.get("envFrom"), f"{container['name']}: name each variable (env), no envFrom"
    return env


def secret_mounts(workload: dict, container: dict) -> dict[str, dict]:
    """mountPath -> the Secret volume it mounts, for each Secret volume of the container."""
    volumes = {volume["name"]: volume for volume in pod_spec(workload).get("volumes", [])}
    return {mount["mountPath"]: volumes[mount["name"]]["secret"] for mount in container.get("volumeMounts", [])
            if "secret" in volumes.get(mount["name"], {})}


def secret_file(workload: dict, container: dict, path: str) -> tuple[str, str] | None:
    """(Secret, key) of the file at path in the container, or None where no Secret volume puts a file there."""
    for mount_path, secret in secret_mounts(workload, container).items():
        if path.startswith(mount_path.rstrip("/") + "/"):
            relative = path[len(mount_path.rstrip("/")) + 1:]
            items = secret.get("items")
            if items is None:
                return secret["secretName"], relative
            return next(((secret["secretName"], item["key"]) for item in items if item["path"] == relative), None)
    return None


@cache
def readme_secret_keys() -> dict[str, list[str]]:
    """The Secrets README's `kubectl create secret generic NAME --from-file=KEY=PATH ...` commands make: NAME -> keys."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "README.md").read_text())
    made = {}
    for name, flags in re.findall(r"kubectl create secret generic (\S+)((?: +--from-file=\S+)+)", text):
        made[name] = [flag.split("=")[1] for flag in flags.split()]
    return made


def quantity(text: str | int) -> float:
    """A Kubernetes quantity (500m, 2, 1Gi, 512Mi) as a number."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(text)).groups()
    return float(number) * units[unit]


# --- the files and the schemas ---------------------------------------------------------------------------------


def test_every_manifest_file_is_in_a_kustomization():
    """Each file a kustomization lists exists, and each YAML file under docker/k8s is listed by its directory's."""
    assert BASE in KUSTOMIZATIONS
    for directory in KUSTOMIZATIONS:
        spec = kustomization(directory)
        assert spec["kind"] == "Kustomization" and spec["apiVersion"].startswith("kustomize.config.k8s.io/")
        listed = set()
        for entry in spec.get("resources", []) + [patch["path"] for patch in spec.get("patches", [])]:
            path = (directory / entry).resolve()
            assert path.exists(), f"{directory}/kustomization.yaml lists {entry}, which does not exist"
            assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{entry}: no kustomization.yaml in it"
            listed.add(path)
        for path in directory.glob("*.y*ml"):
            assert path.name == "kustomization.yaml" or path.resolve() in listed, (
                f"{path.relative_to(ROOT)} is in no kustomization: `kubectl apply -k` would leave it out")
    for path in K8S.rglob("*.y*ml"):
        assert path.parent in KUSTOMIZATIONS, f"{path.relative_to(ROOT)} is outside every kustomization"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@each_kustomization
def test_manifests_validate_strictly(directory: Path, version: str):
    """Every rendered object is valid for Kubernetes `version` by the schemas kubernetes-validate ships (offline),
    strict: a misspelt field is an error, not ignored."""
    for doc in rendered(directory):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {error.message} at "
                                 f"{'.'.join(map(str, error.path))}") from None
    bogus = copy.deepcopy(the(rendered(directory), "Service"))
    bogus["spec"]["clusterIp"] = "None"
    with pytest.raises(kubernetes_validate.ValidationError):  # strict mode is in force
        kubernetes_validate.validate(bogus, version, strict=True)


@each_kustomization
def test_renderer_agrees_with_kustomize(directory: Path):
    """The renderer the other tests fall back on gives what kustomize gives (generated names unhashed)."""
    if kustomize_cli() is None:
        pytest.skip("neither kustomize nor kubectl on this machine: the tests use tests/test_k8s.py's renderer")
    key = lambda doc: (doc["kind"], doc["metadata"]["name"])  # noqa: E731
    assert sorted(render(directory), key=key) == sorted(rendered(directory), key=key)


# --- the configuration -----------------------------------------------------------------------------------------


@each_kustomization
def test_environment_is_read_by_the_cli(directory: Path, tmp_path: Path):
    """Every variable a container sets is an ASYNCRL_* setting its command (or an exec probe) reads, and the
    settings each command builds from them are valid, for every shard's ordinal."""
    docs = rendered(directory)
    valid = valid_env_names()
    base = image_env(dockerfile_instructions())
    for workload, container in containers_of(docs):
        name = f"{workload['kind']} {workload['metadata']['name']}"
        read = env_read_by(argv_of(container))
        for command in probe_commands(container):
            read |= env_read_by(command)
        stand_ins = {}
        for key, path in container_environment(docs, container).items():
            if is_file_setting(key) and path:
                assert secret_file(workload, container, path), f"{name}: {key}={path} is in no mounted Secret"
                stand_ins[path] = tmp_path / Path(path).name
                stand_ins[path].write_text("-----BEGIN CERTIFICATE-----\nstand-in\n" if key.startswith("ASYNCRL_TLS_")
                                           else "stand-in\n")
        ordinals = range(workload["spec"]["replicas"]) if workload["kind"] == "StatefulSet" else [0]
        for ordinal in ordinals:
            env = container_environment(docs, container, ordinal)
            for key in env:
                assert key in valid, f"{name}: {key} is no asyncrl setting"
                assert key in read, f"{name}: {key} is not read by `{' '.join(argv_of(container))}` nor its probes"
            environ = {**base, **{k: str(stand_ins.get(v, v)) for k, v in env.items()}}
            for cls in CONFIG_CLASSES[subcommand(container)]:  # raises ConfigError on a bad value
                from_namespace(cls, argparse.Namespace(), environ=environ)


@each_kustomization
def test_shards_agree_on_k(directory: Path):
    """The StatefulSet's replicas, ASYNCRL_SHARDS and ASYNCRL_SHARD_ADDRESSES agree: one address per shard, in
    ordinal order, each pod's stable name under a headless Service; workers ask shard 0."""
    docs = rendered(directory)
    statefulset, server = server_of(docs)
    env = container_environment(docs, server)
    shards = int(env.get("ASYNCRL_SHARDS", "1"))
    assert statefulset["spec"]["replicas"] == shards, (
        f"replicas {statefulset['spec']['replicas']} but ASYNCRL_SHARDS={shards}")
    service = the(docs, "Service")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"].get("clusterIP") == "None", "the Service must be headless to name each shard"
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items(), "the Service does not select the shards"
    port = int(env.get("ASYNCRL_PORT", ServerOptions.port))
    assert port in [p["port"] for p in service["spec"]["ports"]], f"the Service does not expose {port}"
    assert port in [p["containerPort"] for p in server["ports"]]
    names = [f"{statefulset['metadata']['name']}-{i}.{service['metadata']['name']}:{port}" for i in range(shards)]
    if shards > 1:
        assert env["ASYNCRL_SHARD_ADDRESSES"].split(",") == names
        index = next(v for v in server["env"] if v["name"] == "ASYNCRL_SHARD_INDEX")
        assert index["valueFrom"]["fieldRef"]["fieldPath"] == POD_INDEX, "the shard index must be the pod's ordinal"
    # No shard waits for another (none calls another): OrderedReady would hold back a replaced shard 1 while shard 0
    # is down.
    assert statefulset["spec"].get("podManagementPolicy") == "Parallel", "the shards need not start in order"
    for workload, container in containers_of(docs):
        if subcommand(container) == "worker":
            assert container_environment(docs, container)["ASYNCRL_SERVER"] == names[0], "workers must ask shard 0"


def test_k_is_set_in_one_place():
    """The base's StatefulSet takes its replicas from ASYNCRL_SHARDS (a kustomize replacement), so K is edited
    once, next to the shards' addresses; changing that literal changes the rendered replicas."""
    spec = kustomization(BASE)
    statefulset, server = server_of(render(BASE))
    ref = next(v for v in server["env"] if v["name"] == "ASYNCRL_SHARDS")["valueFrom"]["configMapKeyRef"]
    copies = [r for r in spec.get("replacements", [])
              if r["source"] == {"kind": "ConfigMap", "name": ref["name"], "fieldPath": f"data.{ref['key']}"}
              and any(t["select"].get("kind") == "StatefulSet" and "spec.replicas" in t["fieldPaths"]
                      for t in r["targets"])]
    assert copies, "no replacement copies ASYNCRL_SHARDS into the StatefulSet's replicas"
    generator = next(g for g in spec["configMapGenerator"] if g["name"] == ref["name"])
    assert {literal.split("=", 1)[0] for literal in generator["literals"]} == {"ASYNCRL_SHARDS",
                                                                                "ASYNCRL_SHARD_ADDRESSES"}


# --- probes, resources, volumes, secrets -----------------------------------------------------------------------


@each_kustomization
def test_server_probes_ask_the_health_service(directory: Path):
    """Startup, readiness and liveness probes on every shard: the kubelet's gRPC probe on the service port in
    plaintext, `asyncrl health` (which speaks TLS) when the server serves TLS; time to checkpoint on stop."""
    docs = rendered(directory)
    statefulset, server = server_of(docs)
    env = container_environment(docs, server)
    port = int(env.get("ASYNCRL_PORT", ServerOptions.port))
    assert set(probes(server)) == {"startupProbe", "readinessProbe", "livenessProbe"}
    for kind, probe in probes(server).items():
        if env.get("ASYNCRL_TLS_CERT"):
            assert "grpc" not in probe, f"{kind}: the kubelet's gRPC probe does not speak TLS"
            assert probe["exec"]["command"][:2] == ["asyncrl", "health"], f"{kind}: {probe}"
            assert env.get("ASYNCRL_TLS_CA"), f"{kind}: `asyncrl health` needs ASYNCRL_TLS_CA to speak TLS"
            assert image_env(dockerfile_instructions())["ASYNCRL_SERVER"] == f"127.0.0.1:{port}"
            assert probe.get("timeoutSeconds", 1) >= 5, f"{kind}: python takes seconds to start on a busy node"
        else:
            assert set(probe) & {"grpc", "exec", "httpGet", "tcpSocket"} == {"grpc"}, f"{kind}: {probe}"
            assert probe["grpc"]["port"] == port, f"{kind}: asks port {probe['grpc']['port']}, the server is on {port}"
            assert probe["grpc"].get("service", "") == "", f"{kind}: ask the server as a whole, as `asyncrl health`"
    grace = float(env.get("ASYNCRL_SHUTDOWN_GRACE", ServerOptions.shutdown_grace))
    kill_after = pod_spec(statefulset).get("terminationGracePeriodSeconds", KUBELET_DEFAULT_GRACE)
    assert kill_after >= grace + CHECKPOINT_ALLOWANCE, f"{kill_after}s leaves the final checkpoint too little time"


@each_kustomization
def test_every_container_has_requests_and_limits(directory: Path):
    for workload, container in containers_of(rendered(directory)):
        resources = container.get("resources", {})
        for what in ("cpu", "memory"):
            request, limit = resources.get("requests", {}).get(what), resources.get("limits", {}).get(what)
            assert request and limit, f"{workload['metadata']['name']}: no {what} request and limit"
            assert quantity(request) <= quantity(limit), f"{workload['metadata']['name']}: {what} {request} > {limit}"


@each_kustomization
def test_checkpoints_live_on_each_shards_volume(directory: Path):
    """Each shard checkpoints to its own PersistentVolumeClaim and resumes from it; the claims outlive the pods."""
    docs = rendered(directory)
    statefulset, server = server_of(docs)
    env = container_environment(docs, server)
    assert env.get("ASYNCRL_RESUME") == "true", "a restarted shard should continue from its checkpoints"
    assert env.get("ASYNCRL_HOST") == "0.0.0.0", "a server listening on 127.0.0.1 is unreachable from other pods"
    claims = {template["metadata"]["name"] for template in statefulset["spec"]["volumeClaimTemplates"]}
    checkpoint_dir = Path(env["ASYNCRL_CHECKPOINT_DIR"])
    mounts = [Path(m["mountPath"]) for m in server["volumeMounts"] if m["name"] in claims]
    assert any(m == checkpoint_dir or m in checkpoint_dir.parents for m in mounts), (
        f"{checkpoint_dir} is on no volume claim template's volume")
    retention = statefulset["spec"].get("persistentVolumeClaimRetentionPolicy", {})
    assert retention.get("whenDeleted", "Retain") == "Retain", "deleting the StatefulSet would delete the checkpoints"


@each_kustomization
def test_secrets_are_mounted_files_readable_by_the_image_user(directory: Path):
    """Every file setting names a file of a mounted Secret (one README says how to make, with that key); pods run
    as the image's user, which can read the files; workers get no server key."""
    docs = rendered(directory)
    for workload, container in containers_of(docs):
        name = workload["metadata"]["name"]
        for key, path in container_environment(docs, container).items():
            if is_file_setting(key) and path:
                found = secret_file(workload, container, path)
                assert found, f"{name}: {key}={path} is in no mounted Secret ({sorted(secret_mounts(workload, container))})"
                secret, secret_key = found
                assert secret_key in readme_secret_keys().get(secret, []), (
                    f"{name}: README makes no Secret {secret} with the key {secret_key} (`kubectl create secret generic`)")
        if subcommand(container) == "worker":
            for secret in secret_mounts(workload, container).values():
                keys = [item["key"] for item in secret["items"]] if "items" in secret else readme_secret_keys().get(
                    secret["secretName"], [])
                assert not any(key.endswith(".key") for key in keys), f"{name}: a worker gets a private key"
        pod = pod_spec(workload)
        security = pod.get("securityContext", {})
        assert security.get("runAsNonRoot") and str(security.get("runAsUser")) == image_user()
        assert pod.get("automountServiceAccountToken") is False, f"{name}: asyncrl needs no Kubernetes API token"
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                mode = volume["secret"].get("defaultMode", 0o644)
                readable = (mode & 0o040 and "fsGroup" in security) or mode & 0o004
                assert readable, f"{name}: the image's user cannot read the Secret volume {volume['name']}"


@each_kustomization
def test_workers_scale_as_a_deployment(directory: Path):
    """Workers are a Deployment whose replicas carry nothing of their own, so `kubectl scale` is all it takes."""
    docs = rendered(directory)
    deployment = the(docs, "Deployment")
    for container in pod_spec(deployment)["containers"]:
        assert subcommand(container) == "worker"
        env = container_environment(docs, container)
        assert "ASYNCRL_NAME" not in env, "every replica would get the same name (the default is the pod's host name)"
        assert not any("hostPort" in port for port in container.get("ports", [])), "replicas would collide"
    for workload, container in containers_of(docs):
        assert container["image"] == pod_spec(deployment)["containers"][0]["image"], "one image for every role"


# --- shard 0, run as a process ---------------------------------------------------------------------------------


def kubelet_probe(probe: dict, port: int, env: dict[str, str]) -> bool:
    """One probe, as the kubelet makes it: a plaintext grpc.health.v1 Check, or the command run in the container."""
    timeout = probe.get("timeoutSeconds", 1)
    if "exec" in probe:
        return run_check(probe["exec"]["command"], env).returncode == 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def serving(port: int, ca: str) -> bool:
    """Whether the health service on 127.0.0.1:port says SERVING (over TLS with ca, when ca is set)."""
    address = f"127.0.0.1:{port}"
    channel = (grpc.secure_channel(address, grpc.ssl_channel_credentials(Path(ca).read_bytes())) if ca
               else grpc.insecure_channel(address))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.timeout(180)
@each_kustomization
def test_shard_zero_runs_and_answers_its_probes(directory: Path, tmp_path: Path, pki, containers: list[Container]):
    """Shard 0's container, its environment as rendered (the Secrets as files here), serves; its probes pass
    without the token, and only their way (a plaintext gRPC probe cannot reach a TLS server); SIGTERM within the
    grace period ends it with a checkpoint, and the probes then fail."""
    docs = rendered(directory)
    statefulset, server = server_of(docs)
    env = container_environment(docs, server, ordinal=0)
    port, checkpoint_dir = free_port(), tmp_path / "checkpoints"
    shard_key = tmp_path / "shard-key"
    shard_key.write_text("a shard key made for this test\n")
    here = {"token": str(pki.token), "ca.pem": pki.ca, "server.pem": pki.cert, "server.key": pki.key,
            "shard-key": str(shard_key)}  # the Secrets' keys, as README makes them
    for key, path in dict(env).items():
        if is_file_setting(key) and path:
            _, secret_key = secret_file(statefulset, server, path)
            assert secret_key in here, f"{key}: no stand-in here for the Secret key {secret_key}"
            env[key] = here[secret_key]
    env.update({"ASYNCRL_HOST": "127.0.0.1", "ASYNCRL_PORT": str(port), "ASYNCRL_CHECKPOINT_DIR": str(checkpoint_dir),
                "ASYNCRL_METRICS_PORT": str(free_port()), "ASYNCRL_TENSORBOARD_DIR": str(tmp_path / "tensorboard")})
    process_env = container_env(image_env(dockerfile_instructions()), {"ASYNCRL_SERVER": f"127.0.0.1:{port}"}, env)
    checks = {}  # one of each distinct probe (startup, readiness and liveness often ask alike): each costs seconds
    for kind, probe in probes(server).items():
        handler = repr({k: v for k, v in probe.items() if k in ("grpc", "exec")})
        checks.setdefault(handler, (kind, probe))
    checks = dict(checks.values())
    assert "startupProbe" in checks
    for kind, probe in checks.items():
        assert not kubelet_probe(probe, port, process_env), f"{kind} passed with no server running"

    shard = Container(argv_of(server), process_env, tmp_path / "shard-0.log")
    containers.append(shard)
    # Until the startup probe's window closes, wait for the health service in-process (an exec probe costs a
    # Python start per try); then every probe must pass.
    startup = checks["startupProbe"]
    deadline = time.monotonic() + min(60, startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3))
    while not serving(port, env.get("ASYNCRL_TLS_CA", "")):
        assert shard.popen.poll() is None, f"shard 0 exited with {shard.popen.returncode}:\n{shard.log()}"
        assert time.monotonic() < deadline, f"the startup probe's window closed first:\n{shard.log()}"
        time.sleep(0.5)
    for kind, probe in checks.items():
        assert kubelet_probe(probe, port, process_env), f"{kind} fails on a serving shard:\n{shard.log()}"
    if env.get("ASYNCRL_TLS_CERT"):
        assert not kubelet_probe({"grpc": {"port": port}}, port, process_env), "a plaintext probe reached TLS"
        credentials = grpc.ssl_channel_credentials(Path(pki.ca).read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.ParameterServerServiceStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, "the API answered without the token"

    grace = pod_spec(statefulset).get("terminationGracePeriodSeconds", KUBELET_DEFAULT_GRACE)
    assert shard.stop(timeout=grace) == 0, shard.log()
    assert sorted(checkpoint_dir.glob("checkpoint-*.pt")), f"no checkpoint in {checkpoint_dir}:\n{shard.log()}"
    for kind, probe in checks.items():
        assert not kubelet_probe(probe, port, process_env), f"{kind} still passes after the shard stopped"
