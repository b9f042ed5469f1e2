"""Configuration and command line: flags, ASYNCRL_* variables, clear errors, and the packaging contract."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from asyncrl.common.config import ConfigError, RunConfig, ServerOptions, WorkerOptions, env_name
from asyncrl.common.wire import WORKER_FIELDS
from asyncrl.v1 import parameter_server_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


def asyncrl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "asyncrl", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["server", "--gamma", "1.5"], {}, "--gamma (ASYNCRL_GAMMA) = 1.5: must be in [0, 1]"),
        (["server", "--t-max", "five"], {}, "--t-max = 'five': expected an integer"),
        (["server", "--algo", "dqn"], {}, "--algo (ASYNCRL_ALGO) = 'dqn': must be one of a3c, q1, sarsa1, nstep-q"),
        (["server", "--epsilon-probabilities", "0.5,0.5"], {}, "--epsilon-probabilities (ASYNCRL_EPSILON_PROBABILITIES)"),
        (["server"], {"ASYNCRL_LEARNING_RATE": "-1"}, "--learning-rate (ASYNCRL_LEARNING_RATE) = -1.0: must be > 0"),
        (["server"], {"ASYNCRL_MAX_FRAMES": "lots"}, "ASYNCRL_MAX_FRAMES = 'lots': expected an integer"),
        (["worker", "--envs", "0"], {}, "--envs (ASYNCRL_ENVS) = 0: must be > 0"),
        (["worker", "--dtype", "int8"], {}, "--dtype (ASYNCRL_DTYPE) = 'int8': must be one of float32, float16, bfloat16"),
        (["train", "--hidden-sizes", "64,x"], {}, "--hidden-sizes = '64,x': expected comma-separated integers"),
        (["server", "--port", "70000"], {}, "--port (ASYNCRL_PORT) = 70000"),
    ],
)
def test_bad_values_get_one_clear_message_naming_the_flag(args, env, named):
    """A bad flag or variable exits 2 with one line that names it, before anything starts."""
    result = asyncrl(*args, env=env)
    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_flag_is_refused_by_name():
    """argparse's own error names an unknown flag."""
    result = asyncrl("worker", "--enfs", "2")
    assert result.returncode == 2 and "--enfs" in result.stderr


def test_environment_variables_set_defaults_and_flags_win():
    """ASYNCRL_* variables fill fields; an explicit flag overrides them."""
    from asyncrl.common.cli import build_parser
    from asyncrl.common.config import from_namespace

    environ = {"ASYNCRL_GAMMA": "0.5", "ASYNCRL_HIDDEN_SIZES": "32,16", "ASYNCRL_TARGET_RETURN": "none",
               "ASYNCRL_RESUME": "true"}
    args = build_parser().parse_args(["server", "--t-max", "7"])
    config = from_namespace(RunConfig, args, environ)
    assert (config.gamma, config.hidden_sizes, config.target_return, config.t_max) == (0.5, (32, 16), None, 7)
    assert from_namespace(ServerOptions, args, environ).resume is True
    args = build_parser().parse_args(["server", "--gamma", "0.9"])
    assert from_namespace(RunConfig, args, environ).gamma == 0.9


def test_every_setting_has_help_and_an_environment_variable():
    """Each dataclass field is a documented flag; `--help` shows its ASYNCRL_* name."""
    for cls, command in ((RunConfig, "server"), (ServerOptions, "server"), (WorkerOptions, "worker")):
        help_text = asyncrl(command, "--help").stdout.replace("\n", " ").replace("  ", " ")
        for field in dataclasses.fields(cls):
            assert field.metadata.get("help"), field.name
            assert env_name(field.name) in help_text.replace(" ", ""), field.name


def test_the_wire_config_is_a_view_of_the_run_config():
    """Every RunConfig message field is either a RunConfig field of the same name or derived (model, limits)."""
    derived = {"algorithm", "model", "max_message_bytes", "clip_rewards"}
    wire_fields = {f.name for f in pb.RunConfig.DESCRIPTOR.fields}
    assert wire_fields - derived == set(WORKER_FIELDS)
    assert set(WORKER_FIELDS) <= {f.name for f in dataclasses.fields(RunConfig)}


def test_every_algorithm_name_is_a_method():
    """The --algo choices and the methods the worker and server implement are the same set."""
    from asyncrl.common.algorithms import METHODS
    from asyncrl.common.config import ALGORITHMS

    assert tuple(METHODS) == ALGORITHMS
    assert {m.wire for m in METHODS.values()} == set(pb.Algorithm.values()) - {pb.ALGORITHM_UNSPECIFIED}


def test_config_objects_validate_on_construction():
    """Building a config in code gets the same checks as the command line."""
    with pytest.raises(ConfigError, match="--max-staleness"):
        RunConfig(max_staleness=0)
    with pytest.raises(ConfigError, match="--hidden-sizes"):
        RunConfig(hidden_sizes=(64, 0))


def test_status_reports_an_unreachable_server():
    """`asyncrl status` against a closed port says it cannot reach it, with exit code 1."""
    result = asyncrl("status", "--server", "127.0.0.1:9", "--timeout", "1")
    assert result.returncode == 1 and "cannot reach 127.0.0.1:9" in result.stderr


def test_the_wheel_has_one_top_level_import_name(tmp_path: Path):
    """The built distribution installs only `asyncrl` (proto/, common/, server/, worker/ mapped under it)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(ROOT)],
        check=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("asyncrl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"asyncrl"}
    for module in ("asyncrl/v1/parameter_server_pb2.py", "asyncrl/common/config.py", "asyncrl/server/store.py",
                   "asyncrl/worker/actor.py", "asyncrl/__main__.py", "asyncrl/v1/parameter_server.proto"):
        assert module in names
