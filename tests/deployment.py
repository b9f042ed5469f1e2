"""What the Docker and Kubernetes tests share: the Dockerfile read as data, the ASYNCRL_* variables a command reads,
and a container's main process run here as a plain process."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncrl.common.cli import build_parser
from asyncrl.common.config import RunConfig, ServerOptions, TrainOptions, WorkerOptions, env_name

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
# Seconds the final checkpoint may take on top of ASYNCRL_SHUTDOWN_GRACE before the SIGKILL (Docker's or the kubelet's).
CHECKPOINT_ALLOWANCE = 10.0
# The settings each container command builds from its environment.
CONFIG_CLASSES = {"server": (RunConfig, ServerOptions), "worker": (WorkerOptions,)}


# --- the Dockerfile --------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, arguments = current.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    assert not current, "docker/Dockerfile ends inside a continued line"
    return instructions


def only(instructions: list[tuple[str, str]], keyword: str) -> str:
    found = [arguments for name, arguments in instructions if name == keyword]
    assert len(found) == 1, f"docker/Dockerfile: expected one {keyword}, found {len(found)}"
    return found[0]


def exec_form(text: str, what: str) -> list[str]:
    """A JSON array (exec form), refusing shell form, which would run under /bin/sh -c and not get signals."""
    try:
        argv = json.loads(text)
    except json.JSONDecodeError:
        raise AssertionError(f"{what} is not in exec form (a JSON array): {text!r}") from None
    assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv), f"{what}: {text!r}"
    return argv


def image_entrypoint() -> list[str]:
    return exec_form(only(dockerfile_instructions(), "ENTRYPOINT"), "ENTRYPOINT")


def image_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The variables the image's ENV instructions set (KEY=VALUE form only)."""
    env: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            for token in shlex.split(arguments):
                key, equals, value = token.partition("=")
                assert equals and "$" not in value, f"docker/Dockerfile: ENV {token!r}: use literal KEY=VALUE"
                env[key] = value
    return env


def image_healthcheck(instructions: list[tuple[str, str]]) -> list[str]:
    options, cmd, argv = only(instructions, "HEALTHCHECK").partition("CMD ")
    assert cmd, "docker/Dockerfile: HEALTHCHECK has no CMD"
    assert all(o.startswith("--") for o in options.split()), f"HEALTHCHECK options: {options!r}"
    return exec_form(argv, "HEALTHCHECK CMD")


def image_user() -> str:
    """The uid the image's last USER instruction runs as."""
    users = [arguments for name, arguments in dockerfile_instructions() if name == "USER"]
    assert users, "no USER: the container would run as root"
    return users[-1].split(":")[0]


# --- the ASYNCRL_* variables -----------------------------------------------------------------------------------


def valid_env_names() -> set[str]:
    """Every ASYNCRL_* variable the configuration defines (ASYNCRL_SERVER is also read by status and health)."""
    names = {env_name(f.name) for cls in (RunConfig, ServerOptions, WorkerOptions, TrainOptions)
             for f in dataclasses.fields(cls)}
    return names | {"ASYNCRL_SERVER"}


def env_read_by(argv: list[str]) -> set[str]:
    """The ASYNCRL_* variables `asyncrl SUBCOMMAND` reads: the ones its --help names."""
    assert argv[:1] == ["asyncrl"] and len(argv) >= 2, f"not an asyncrl command: {argv}"
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert argv[1] in subcommands, f"`asyncrl {argv[1]}` is no subcommand"
    read = {name for action in subcommands[argv[1]]._actions
            for name in re.findall(r"\benv (ASYNCRL_\w+)", action.help or "")}
    assert read <= valid_env_names(), f"the CLI names variables the config does not define: {read - valid_env_names()}"
    return read


def is_file_setting(name: str) -> bool:
    """Whether an ASYNCRL_* variable names a file the command reads at start (a token, a key, a certificate)."""
    return (name.endswith("_FILE") and name != "ASYNCRL_PORT_FILE") or name.startswith("ASYNCRL_TLS_")


def container_env(*layers: dict[str, str]) -> dict[str, str]:
    """This machine's environment without any ASYNCRL_* variable, the venv's scripts first on PATH, then layers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCRL_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    for layer in layers:
        env.update(layer)
    return env


# --- containers as processes -----------------------------------------------------------------------------------


class Container:
    """A container's main process, run here: its argv as the image would exec it, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float) -> int:
        """SIGTERM, as `docker stop` and the kubelet send, and the exit status within timeout (before the SIGKILL)."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`{' '.join(self.argv)}` ignored SIGTERM for {timeout}s (it would be SIGKILLed):\n"
                                 f"{self.log()}") from None

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._log.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_check(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    """The containers a test starts, killed at teardown if still running (tests import this fixture)."""
    started: list[Container] = []
    yield started
    for container in started:
        container.close()
