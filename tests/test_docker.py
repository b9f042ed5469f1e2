"""The Docker deployment (docker/Dockerfile, docker/docker-compose.yml, /.dockerignore), without a Docker engine.

The files are parsed and checked against the CLI they configure; then the image's entry
point, default command, environment and healthcheck run as plain processes on 127.0.0.1,
the way the containers would run them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import grpc
import pytest
import yaml

from asyncrl.common.config import RunConfig, ServerOptions, WorkerOptions, env_name, from_namespace
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc
from deployment import (  # containers: a fixture
    containers,
    CHECKPOINT_ALLOWANCE, CONFIG_CLASSES, DOCKERFILE, ROOT, VENV_BIN, Container, container_env, dockerfile_instructions,
    env_read_by, exec_form, free_port, image_env, image_healthcheck, is_file_setting, only, run_check, valid_env_names,
)

COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
SHARDED_FILE = ROOT / "docker" / "docker-compose.sharded.yml"
COMPOSE_FILES = [COMPOSE_FILE, SHARDED_FILE]  # each a whole deployment (docker-compose.secure.yml is an override)
DOCKERIGNORE = ROOT / ".dockerignore"
DOCKER_DEFAULT_STOP_GRACE = 10.0  # seconds Docker waits after SIGTERM before SIGKILL when nothing says otherwise


# --- reading the files -----------------------------------------------------------------------------------------


def load_compose(path: Path = COMPOSE_FILE) -> dict:
    with path.open() as handle:
        return yaml.safe_load(handle)


def service(compose: dict, name: str) -> dict:
    assert name in compose.get("services", {}), f"the compose file has no service {name!r}"
    return compose["services"][name]


def services_running(compose: dict, subcommand: str) -> dict[str, dict]:
    """The services whose command is `asyncrl SUBCOMMAND` (the server's shards, or the workers), by name."""
    return {name: svc for name, svc in compose["services"].items() if svc["command"] == [subcommand]}


def shards_in_order(compose: dict) -> list[tuple[str, dict]]:
    """The server services by ASYNCRL_SHARD_INDEX (one unsharded server: index 0)."""
    servers = services_running(compose, "server")
    return sorted(servers.items(), key=lambda item: int(service_env(item[1]).get("ASYNCRL_SHARD_INDEX", "0")))


def service_env(svc: dict) -> dict[str, str]:
    """A service's `environment`, mapping or list form, as text."""
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env = {}
    for key, value in raw.items():
        assert value is not None, f"environment {key} has no value: it would come from the host's shell"
        text = str(value).lower() if isinstance(value, bool) else str(value)
        assert "$" not in text, f"environment {key}={text!r}: keep values literal so this test runs them as they are"
        env[key] = text
    return env


def compose_healthcheck(svc: dict) -> list[str]:
    test = svc.get("healthcheck", {}).get("test")
    assert isinstance(test, list) and test[:1] == ["CMD"], f"healthcheck test must be exec form [CMD, ...]: {test!r}"
    return test[1:]


def duration_seconds(text: str | int | float) -> float:
    """A compose duration such as 30s, 1m30s or 500ms, in seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# --- the compose files -----------------------------------------------------------------------------------------

each_compose_file = pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)


@each_compose_file
def test_compose_services_share_the_image(path: Path):
    """Compose defines servers and workers, one image built from docker/Dockerfile in the repository root."""
    compose = load_compose(path)
    assert services_running(compose, "server") and services_running(compose, "worker")
    for name, svc in compose["services"].items():
        build = svc.get("build")
        assert isinstance(build, dict), f"{name}: no build section"
        context = (path.parent / build["context"]).resolve()
        assert context == ROOT, f"{name}: build context {context} is not the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, f"{name}: dockerfile {build['dockerfile']}"
        assert svc["command"] in (["server"], ["worker"]), f"{name}: command {svc['command']}"
    images = {svc["image"] for svc in compose["services"].values()}
    assert len(images) == 1, f"servers and workers must run the same image, not {images}"
    if path == COMPOSE_FILE:
        assert service(compose, "server")["command"] == ["server"] and service(compose, "worker")["command"] == ["worker"]


@each_compose_file
def test_compose_server_health_volume_and_grace(path: Path):
    """Each server: an `asyncrl health` healthcheck, checkpoints in a named volume of its own, time to checkpoint on
    stop."""
    compose = load_compose(path)
    named = set(compose.get("volumes") or {})
    owners: dict[str, str] = {}
    for name, server in services_running(compose, "server").items():
        env = service_env(server)
        assert compose_healthcheck(server)[:2] == ["asyncrl", "health"]
        assert env["ASYNCRL_HOST"] == "0.0.0.0", "a server listening on 127.0.0.1 is unreachable from other containers"
        assert env.get("ASYNCRL_RESUME") == "true", "a restarted server should continue from its checkpoints"

        checkpoint_dir = Path(env["ASYNCRL_CHECKPOINT_DIR"])
        assert checkpoint_dir.is_absolute()
        mounts = {}
        for volume in server.get("volumes", []):
            source, target = (volume.split(":")[:2] if isinstance(volume, str) else (volume["source"], volume["target"]))
            if source in named:
                mounts[Path(target)] = source
        holding = [source for m, source in mounts.items() if checkpoint_dir == m or m in checkpoint_dir.parents]
        assert holding, f"{name}: no named volume holds {checkpoint_dir}; named volume mounts: {mounts}"
        assert holding[0] not in owners, f"{name} and {owners.get(holding[0])} share the volume {holding[0]}"
        owners[holding[0]] = name

        grace = env.get("ASYNCRL_SHUTDOWN_GRACE", str(ServerOptions.shutdown_grace))
        stop_grace = duration_seconds(server.get("stop_grace_period", DOCKER_DEFAULT_STOP_GRACE))
        assert stop_grace >= float(grace) + CHECKPOINT_ALLOWANCE, (
            f"{name}: stop_grace_period {stop_grace}s leaves the final checkpoint too little time after a {grace}s "
            "shutdown grace")


@each_compose_file
def test_compose_worker_scales(path: Path):
    """Workers wait for every healthy server, find shard 0 by service name, and carry nothing per replica, so --scale
    works."""
    compose = load_compose(path)
    (first, first_svc), *_ = shards_in_order(compose)
    for name, worker in services_running(compose, "worker").items():
        for server in services_running(compose, "server"):
            assert worker["depends_on"][server]["condition"] == "service_healthy", f"{name} does not wait for {server}"
        for key in ("container_name", "ports", "hostname"):
            assert key not in worker, f"{name} sets {key}: replicas would collide"
        env = service_env(worker)
        assert env["ASYNCRL_SERVER"] == f"{first}:{service_env(first_svc)['ASYNCRL_PORT']}"
        assert "ASYNCRL_NAME" not in env, "every replica would get the same name"
        assert worker.get("restart") == "on-failure", "a worker done with training exits 0 and must stay down"


def secret_files_here(env: dict[str, str], svc: dict, tmp_path: Path) -> dict[str, str]:
    """env with each file setting that names a compose secret of svc (/run/secrets/NAME) moved to a file here."""
    moved = dict(env)
    for key, value in env.items():
        if is_file_setting(key) and value.startswith("/run/secrets/"):
            secret = value.removeprefix("/run/secrets/")
            assert secret in svc.get("secrets", []), f"{key}={value}: {secret} is not a secret of the service"
            here = tmp_path / secret
            here.write_text("-----BEGIN CERTIFICATE-----\nstand-in\n" if key.startswith("ASYNCRL_TLS_") else "stand-in\n")
            moved[key] = str(here)
    return moved


@each_compose_file
def test_compose_environment_is_read_by_the_cli(path: Path, tmp_path: Path):
    """Every compose variable is a valid ASYNCRL_* setting read by its service's command or healthcheck, and the
    settings each command builds from them are valid (the files they name are compose secrets)."""
    compose = load_compose(path)
    instructions = dockerfile_instructions()
    entrypoint = exec_form(only(instructions, "ENTRYPOINT"), "ENTRYPOINT")
    valid = valid_env_names()
    for name, svc in compose["services"].items():
        env = service_env(svc)
        command = entrypoint + svc["command"]
        read = env_read_by(command)
        if "healthcheck" in svc and not svc["healthcheck"].get("disable"):
            read |= env_read_by(compose_healthcheck(svc))
        for key in env:
            assert key in valid, f"{name}: {key} is no asyncrl setting"
            assert key in read, f"{name}: {key} is not read by `{' '.join(command)}` nor by its healthcheck"
        environ = {**image_env(instructions), **secret_files_here(env, svc, tmp_path)}
        for cls in CONFIG_CLASSES.get(svc["command"][0], ()):  # raises ConfigError on a bad value
            from_namespace(cls, argparse.Namespace(), environ=environ)


def test_sharded_compose_shards_agree():
    """docker-compose.sharded.yml: K shard services with indices 0..K-1, each told K, every shard's address in index
    order and the same shard key; the same run everywhere (this test is the only check: a shard does not compare its
    configuration with shard 0's at run time); shard 0 first."""
    compose = load_compose(SHARDED_FILE)
    shards = shards_in_order(compose)
    envs = [service_env(svc) for _, svc in shards]
    assert len(shards) >= 2, "the sharded compose file should run more than one shard"
    assert [int(env["ASYNCRL_SHARD_INDEX"]) for env in envs] == list(range(len(shards)))
    assert {env["ASYNCRL_SHARDS"] for env in envs} == {str(len(shards))}, "ASYNCRL_SHARDS is not the number of shards"
    addresses = ",".join(f"{name}:{env['ASYNCRL_PORT']}" for (name, _), env in zip(shards, envs))
    for (name, svc), env in zip(shards, envs):
        assert env["ASYNCRL_SHARD_ADDRESSES"] == addresses, f"{name}: {env['ASYNCRL_SHARD_ADDRESSES']} != {addresses}"
        key_file = env["ASYNCRL_SHARD_KEY_FILE"]
        secret = key_file.removeprefix("/run/secrets/")
        assert key_file.startswith("/run/secrets/") and secret in svc["secrets"] and secret in compose["secrets"]
    assert len({env["ASYNCRL_SHARD_KEY_FILE"] for env in envs}) == 1, "every shard must read the same shard key"
    run = {env_name(f.name) for f in dataclasses.fields(RunConfig)}
    for (name, _), env in zip(shards[1:], envs[1:]):
        differ = {k for k in run if env.get(k) != envs[0].get(k)}
        assert not differ, f"{name} runs another configuration than {shards[0][0]}: {sorted(differ)}"
    for name, svc in shards[1:]:
        assert "depends_on" not in svc, f"{name} waits for another shard, which none needs (no shard calls another)"


def compose_cli() -> list[str] | None:
    """`docker compose` (the v2 plugin) or a v2 `docker-compose` (on PATH or in the venv), if there is one."""
    for name, *rest in (["docker", "compose"], ["docker-compose"]):
        executable = shutil.which(name, path=container_env()["PATH"])
        if executable is None:
            continue
        candidate = [executable, *rest]
        version = subprocess.run([*candidate, "version", "--short"], capture_output=True, text=True)
        if version.returncode == 0 and re.match(r"v?([2-9]|\d\d+)\.", version.stdout.strip()):
            return candidate
    return None


@each_compose_file
def test_compose_config_validates(path: Path):
    """`docker compose config` accepts the file (needs the compose v2 CLI, not an engine)."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI (`docker compose` plugin or docker-compose v2) on this machine")
    result = subprocess.run([*cli, "-f", str(path), "config", "--format", "json"], capture_output=True,
                            text=True, env=container_env({"TORCH_INDEX": ""}))
    # The resolved model is checked too, not only the exit status: some wrappers of the binary lose it.
    assert result.returncode == 0 and result.stdout.strip(), f"compose refused the file:\n{result.stderr}"
    resolved = json.loads(result.stdout)["services"]
    compose = load_compose(path)
    for worker in services_running(compose, "worker"):
        for server in services_running(compose, "server"):
            assert resolved[worker]["depends_on"][server]["condition"] == "service_healthy"
    for server in services_running(compose, "server"):
        assert [v["type"] for v in resolved[server]["volumes"]] == ["volume"]


SECURE_FILE = ROOT / "docker" / "docker-compose.secure.yml"


def test_secure_override_passes_token_and_certificates_as_secrets():
    """docker-compose.secure.yml: every variable is read by its service (or healthcheck), and each file it names is a
    compose secret of that service, mounted at /run/secrets/NAME."""
    base = load_compose()
    with SECURE_FILE.open() as handle:
        secure = yaml.safe_load(handle)
    entrypoint = exec_form(only(dockerfile_instructions(), "ENTRYPOINT"), "ENTRYPOINT")
    for name, svc in secure["services"].items():
        command = entrypoint + base["services"][name]["command"]
        read = env_read_by(command)
        if not base["services"][name].get("healthcheck", {}).get("disable"):
            read |= env_read_by(compose_healthcheck(base["services"][name]))
        env = service_env(svc)
        assert env and set(env) <= read, f"{name}: {set(env) - read} not read by `{' '.join(command)}`"
        for value in env.values():
            assert value.startswith("/run/secrets/"), f"{name}: {value} is not a compose secret"
            secret = value.removeprefix("/run/secrets/")
            assert secret in svc["secrets"] and secret in secure["secrets"], f"{name}: no secret {secret}"
    assert "ASYNCRL_AUTH_TOKEN_FILE" in service_env(secure["services"]["worker"])
    assert "ASYNCRL_TLS_CERT" in service_env(secure["services"]["server"])


# --- the Dockerfile --------------------------------------------------------------------------------------------


def test_dockerfile_runs_asyncrl_as_a_non_root_user():
    """The image: python:3.11-slim, exec-form `asyncrl` entry point, `server` by default, non-root, a healthcheck."""
    instructions = dockerfile_instructions()
    assert only(instructions, "FROM") == "python:3.11-slim"
    assert exec_form(only(instructions, "ENTRYPOINT"), "ENTRYPOINT") == ["asyncrl"]
    assert exec_form(only(instructions, "CMD"), "CMD") == ["server"]
    users = [arguments for name, arguments in instructions if name == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"
    assert image_healthcheck(instructions)[:2] == ["asyncrl", "health"]

    env = image_env(instructions)
    for key in env:
        if key.startswith("ASYNCRL_"):
            assert key in valid_env_names(), f"ENV {key} is no asyncrl setting"
    port = env["ASYNCRL_PORT"]
    assert only(instructions, "EXPOSE").split() == [port]
    assert env["ASYNCRL_SERVER"] == f"127.0.0.1:{port}", "the healthcheck must ask this container's own server"
    assert env["ASYNCRL_HOST"] == "0.0.0.0"
    volumes = [Path(v) for name, arguments in instructions if name == "VOLUME" for v in exec_form(arguments, "VOLUME")]
    checkpoint_dir = Path(env["ASYNCRL_CHECKPOINT_DIR"])
    assert any(v == checkpoint_dir or v in checkpoint_dir.parents for v in volumes), "checkpoints are not in a VOLUME"


def test_dockerfile_installs_the_cpu_build_of_torch():
    """torch pinned as in the Makefile, TORCH_INDEX a build argument, a CUDA build refused, no hand downloads."""
    instructions = dockerfile_instructions()
    args = dict(arguments.partition("=")[::2] for name, arguments in instructions if name == "ARG")
    makefile_version = re.search(r"^TORCH_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_version and args.get("TORCH_VERSION") == makefile_version.group(1)
    assert args.get("TORCH_INDEX") == "", "TORCH_INDEX must default to empty (plain pip install)"
    runs = [arguments for name, arguments in instructions if name == "RUN"]
    torch_install = [r for r in runs if re.search(r"pip install [^&]*torch==\$\{?TORCH_VERSION", r)]
    assert torch_install and "TORCH_INDEX" in torch_install[0]
    assert any("nvidia-" in r and "exit 1" in r for r in runs), "no RUN step refuses nvidia-* packages"
    for name, arguments in instructions:
        assert name != "ADD", "ADD can fetch URLs; use COPY"
        assert not re.search(r"\b(curl|wget)\b", arguments), f"{name} downloads by hand: {arguments[:80]}"


def dockerignore_excludes(relative: str) -> bool:
    """Whether /.dockerignore keeps a path (relative to the context, '/'-separated) out of the build context."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rules.append((negated, re.compile(regex)))
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in rules:  # the last matching rule wins; a rule matching a parent directory applies
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_image_gets_every_source_pip_install_needs(tmp_path: Path):
    """The COPY steps, through /.dockerignore, give `pip install` pyproject, its readme and every module."""
    instructions = dockerfile_instructions()
    assert DOCKERIGNORE.exists(), "no /.dockerignore: .venv and runs/ would be sent as build context"
    assert dockerignore_excludes(".venv/bin/python") and dockerignore_excludes(".git/HEAD")
    image = tmp_path / "image"
    for name, arguments in instructions:
        if name != "COPY":
            continue
        *sources, destination = shlex.split(arguments)
        assert not any(s.startswith("--") for s in sources), f"COPY {arguments}: flags are not emulated here"
        for source in sources:
            assert not dockerignore_excludes(source), f"COPY {source}: /.dockerignore excludes it, the build fails"
            path, target = ROOT / source, image / destination.lstrip("/")
            if path.is_dir():
                for file in sorted(p for p in path.rglob("*") if p.is_file()):
                    relative = file.relative_to(ROOT).as_posix()
                    if not dockerignore_excludes(relative):
                        (target / file.relative_to(path)).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(file, target / file.relative_to(path))
            else:
                target = target / path.name if destination.endswith("/") else target
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
    installs = [m.group(1) for name, arguments in instructions if name == "RUN"
                for m in re.finditer(r"pip install (/\S+)", arguments)]
    assert len(installs) == 1, f"expected one `pip install /PATH` of the project, found {installs}"
    source = image / installs[0].lstrip("/")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (source / "pyproject.toml").read_bytes() == (ROOT / "pyproject.toml").read_bytes()
    assert (source / project["project"]["readme"]).is_file(), "the readme pyproject names is not copied"
    setuptools = project["tool"]["setuptools"]
    package_dirs = setuptools["package-dir"]
    for package in setuptools["packages"]:
        owner = max((p for p in package_dirs if package == p or package.startswith(p + ".")), key=len)
        directory = Path(package_dirs[owner], *package[len(owner):].split(".")[1:])
        expected = sorted(p.name for p in (ROOT / directory).glob("*.py"))
        copied = sorted(p.name for p in (source / directory).glob("*.py"))
        assert "__init__.py" in copied and copied == expected, f"{package} ({directory}): {copied} != {expected}"
        for pattern in setuptools.get("package-data", {}).get(package, []):
            for data in (ROOT / directory).glob(pattern):
                assert (source / directory / data.name).is_file(), f"package data {directory / data.name} not copied"


# --- the deployment, run as processes --------------------------------------------------------------------------


def wait_healthy(container: Container, checks: list[list[str]], env: dict[str, str], timeout: float = 60.0) -> None:
    """Runs the healthcheck commands until each exits 0, as Docker would during the start period."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if container.popen.poll() is not None:
            raise AssertionError(f"the server exited with {container.popen.returncode}:\n{container.log()}")
        if all(run_check(argv, env).returncode == 0 for argv in checks):
            return
        time.sleep(0.5)
    raise AssertionError(f"the healthcheck did not pass within {timeout}s:\n{container.log()}")


def server_status(port: int) -> pb.GetStatusResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return pb_grpc.ParameterServerServiceStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)


@pytest.mark.timeout(120)
def test_compose_deployment_runs_as_processes(tmp_path: Path, containers: list[Container]):
    """The image and compose services run as processes: healthy, training, SIGTERM, checkpoint, resume."""
    instructions = dockerfile_instructions()
    compose = load_compose()
    server_svc, worker_svc = service(compose, "server"), service(compose, "worker")
    entrypoint = exec_form(only(instructions, "ENTRYPOINT"), "ENTRYPOINT")
    assert (VENV_BIN / entrypoint[0]).exists(), f"no {entrypoint[0]} console script in {VENV_BIN}"
    base = image_env(instructions)

    # The server container, moved to 127.0.0.1 and a free port; its own checkpoint directory.
    port = free_port()
    checkpoint_dir = tmp_path / "checkpoints"
    own_address = f"{base['ASYNCRL_SERVER'].rpartition(':')[0]}:{port}"  # as if built for this port
    server_env = container_env(base, service_env(server_svc), {
        "ASYNCRL_HOST": "127.0.0.1", "ASYNCRL_PORT": str(port), "ASYNCRL_SERVER": own_address,
        "ASYNCRL_CHECKPOINT_DIR": str(checkpoint_dir), "ASYNCRL_METRICS_PORT": str(free_port()),
        "ASYNCRL_TENSORBOARD_DIR": str(tmp_path / "tensorboard"),
    })
    checks = [compose_healthcheck(server_svc), image_healthcheck(instructions)]
    stop_grace = duration_seconds(server_svc.get("stop_grace_period", DOCKER_DEFAULT_STOP_GRACE))

    for argv in checks:
        assert run_check(argv, server_env).returncode != 0, f"{argv} passed with no server running"
    server = Container(entrypoint + server_svc["command"], server_env, tmp_path / "server.log")
    containers.append(server)
    wait_healthy(server, checks, server_env)

    # A worker container, pointed at this server instead of the service name.
    worker_env = container_env(base, service_env(worker_svc), {"ASYNCRL_SERVER": f"127.0.0.1:{port}"})
    worker = Container(entrypoint + worker_svc["command"], worker_env, tmp_path / "worker.log")
    containers.append(worker)
    envs = int(service_env(worker_svc).get("ASYNCRL_ENVS", WorkerOptions.envs))
    deadline = time.monotonic() + 60
    while True:
        status = server_status(port)
        if len(status.workers) == 1 and status.workers[0].pushes_applied >= 3 and status.updates_applied >= 3:
            break
        assert worker.popen.poll() is None, f"the worker exited with {worker.popen.returncode}:\n{worker.log()}"
        assert time.monotonic() < deadline, f"no pushes applied within 60s:\n{status}\n{server.log()}\n{worker.log()}"
        time.sleep(0.25)
    assert status.workers[0].num_envs == envs and status.workers[0].alive and status.global_frames > 0

    # docker compose down: SIGTERM to the workers first (they depend on the server), then to the
    # server; each is SIGKILLed after its stop_grace_period.
    worker_grace = duration_seconds(worker_svc.get("stop_grace_period", DOCKER_DEFAULT_STOP_GRACE))
    assert worker.stop(timeout=worker_grace) == 0, worker.log()
    stopped = server_status(port)
    assert server.stop(timeout=stop_grace) == 0, server.log()
    assert sorted(checkpoint_dir.glob("checkpoint-*.pt")), f"no checkpoint in {checkpoint_dir}:\n{server.log()}"
    for argv in checks:
        assert run_check(argv, server_env).returncode != 0, f"{argv} still passes after the server stopped"

    # docker compose up again (or restart: on-failure), ASYNCRL_RESUME=true: the run continues where it stopped.
    restarted = Container(entrypoint + server_svc["command"], server_env, tmp_path / "server-restarted.log")
    containers.append(restarted)
    wait_healthy(restarted, checks, server_env)
    resumed = server_status(port)
    assert (resumed.global_frames, resumed.version, resumed.updates_applied) == (
        stopped.global_frames, stopped.version, stopped.updates_applied), (
        f"did not resume the checkpointed run:\n{resumed}\n{restarted.log()}")
    assert restarted.stop(timeout=stop_grace) == 0, restarted.log()
