"""The run's configuration: one dataclass per process kind, with flags and ASYNCRL_* variables derived from them.

Every setting is declared once, here, with its default and help text. The command line
(`asyncrl server|worker|train`), the ASYNCRL_* environment variables (which containers
use instead of per-replica flags) and the RunConfig message the server sends workers are
all views of these dataclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from asyncrl.common.presets import PRESETS, family_of, preset_defaults

ALGORITHMS = ("a3c", "q1", "sarsa1", "nstep-q")
"""The paper's methods: A3C, one-step Q-learning, one-step SARSA, n-step Q-learning."""

LR_SCHEDULES = ("linear", "constant")
TARGET_MEANS = ("train", "eval")
EVAL_POLICIES = ("greedy", "sample")
NETWORKS = ("auto", "mlp", "mlp-separate", "atari", "atari-lstm")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
ENV_PREFIX = "ASYNCRL_"


class ConfigError(ValueError):
    """A setting has a bad value; the message names the flag and its environment variable."""


def _setting(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def _gamma(value: float) -> str | None:
    return None if 0 <= value <= 1 else "must be in [0, 1]"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number in 0..65535 (0 picks a free one)"


def _readable(path: str) -> str | None:
    """A file named by a security flag must be readable when the command starts, not at the first call."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as error:
        return f"cannot read it: {error.strerror or error}"
    return None if content.strip() else "the file is empty"


def _pem(path: str) -> str | None:
    if (problem := _readable(path)) is not None or not path:
        return problem
    with open(path, "rb") as handle:
        return None if b"-----BEGIN " in handle.read() else "not a PEM file (no -----BEGIN line)"


class _Checked:
    """Checks every field's choices and range when an instance is built, from flags or from code."""

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class RunConfig(_Checked):
    """The training run: the server enforces it and tells every worker at registration."""

    preset: str = _setting(
        "classic", "defaults for an env family, applied before every other setting: classic (vector "
        "observations), atari (ALE games, image observations) or continuous (vector observations, Box "
        "actions: a Gaussian policy); the other fields' defaults shown here are classic's", choices=tuple(PRESETS), shown="chosen by --env-id",
    )
    algo: str = _setting(
        "a3c", "learning method: a3c, q1 (one-step Q), sarsa1 (one-step SARSA), nstep-q (n-step Q)",
        choices=ALGORITHMS,
    )
    env_id: str = _setting("CartPole-v1", "gymnasium environment id")
    seed: int = _setting(0, "run seed; every worker and env copy derives its own from it")
    gamma: float = _setting(0.99, "discount factor", check=_gamma)
    t_max: int = _setting(5, "steps per env copy per rollout (the paper's t_max)", check=_positive)
    entropy_beta: float = _setting(0.01, "entropy regularisation weight (the paper's beta)", check=_non_negative)
    value_loss_coef: float = _setting(0.5, "weight of the value loss", check=_non_negative)
    learning_rate: float = _setting(2e-3, "initial RMSProp learning rate", check=_positive)
    lr_schedule: str = _setting(
        "linear", "learning-rate schedule: 'linear' anneals to 0 over --max-frames (the paper's), 'constant'",
        choices=LR_SCHEDULES,
    )
    rmsprop_decay: float = _setting(0.99, "shared RMSProp decay of the squared-gradient average", check=_fraction)
    rmsprop_eps: float = _setting(
        1e-5, "RMSProp epsilon, added to the squared-gradient average inside the square root", check=_positive
    )
    rmsprop_init: float = _setting(
        0.0, "initial value of RMSProp's squared-gradient average: 0 as torch's RMSprop, 1 as TensorFlow's (a "
        "warm-up: early steps are lr x gradient, growing to RMSProp's normalised steps over ~1/(1-decay) updates)",
        check=_non_negative,
    )
    max_grad_norm: float = _setting(40.0, "global-norm gradient clipping threshold (0 disables)", check=_non_negative)
    network: str = _setting(
        "auto", "the network: 'mlp' (vector observations, one body shared by the heads), 'mlp-separate' (A3C: "
        "separate policy and value MLPs), 'atari' (the paper's conv net, FF), 'atari-lstm' (A3C with 256 LSTM "
        "cells after the fc layer); 'auto' picks atari for image observations, else mlp-separate for A3C and "
        "mlp for the Q methods",
        choices=NETWORKS,
    )
    hidden_sizes: tuple[int, ...] = _setting((64, 64), "MLP hidden layer widths, comma-separated (empty: a linear model)")
    repeat_action_probability: float = _setting(
        0.0, "Atari sticky actions: the chance an action repeats the previous one (the paper: 0)", check=_fraction
    )
    clip_rewards: str = _setting(
        "auto", "clip rewards to [-1, 1] for learning (episode returns stay unclipped): on, off, or auto (on for "
        "Atari)", choices=("auto", "on", "off"),
    )
    reward_scale: float = _setting(
        1.0, "multiply rewards by this for learning (after any clipping; episode returns stay unscaled): keeps "
        "returns of tasks like Pendulum-v1 (-16 a step) near the value head's initial range", check=_positive,
    )
    async_update: int = _setting(
        5, "one-step methods: steps per env copy between pushes (the paper's I_AsyncUpdate)", check=_positive
    )
    target_update_frames: int = _setting(
        4_000, "value-based methods: copy the network to the target network every this many frames of T "
        "(the paper's I_target)", check=_positive,
    )
    epsilon_values: tuple[float, ...] = _setting(
        (0.1, 0.01, 0.5), "value-based methods: final exploration rates each env copy draws from"
    )
    epsilon_probabilities: tuple[float, ...] = _setting(
        (0.4, 0.3, 0.3), "value-based methods: the probabilities of --epsilon-values"
    )
    epsilon_anneal_frames: int = _setting(
        50_000, "value-based methods: epsilon falls linearly from 1 to its final value over this many frames of T "
        "(the paper used 4 million on Atari)", check=_non_negative,
    )
    max_frames: int = _setting(1_000_000, "frame budget: training ends when T reaches it", check=_positive)
    target_return: float | None = _setting(
        475.0, "training ends when the mean return of the last 100 episodes reaches this ('none' disables)",
        shown="the task's conventional score where there is one (CartPole-v1 475, Acrobot-v1 -100, Pong 18), "
        "else none",
    )
    max_staleness: int = _setting(
        32, "pushes computed against a version more than this many updates old are refused (ABORTED)", check=_positive
    )
    target_on: str = _setting(
        "train", "which mean return --target-return applies to: 'train' (the last 100 training episodes) or 'eval' "
        "(the last --eval-window episodes of the evaluation workers)", choices=TARGET_MEANS,
    )
    eval_policy: str = _setting(
        "greedy", "how evaluation workers act: 'greedy' (the policy's mode: argmax of the logits or Q values) or "
        "'sample' (A3C samples its policy; the Q methods stay greedy)", choices=EVAL_POLICIES,
    )
    eval_epsilon: float = _setting(
        0.0, "evaluation workers take a uniform random action with this probability (e.g. 0.05 on Atari)",
        check=_fraction,
    )
    eval_window: int = _setting(10, "the evaluation mean return averages this many latest evaluation episodes",
                                check=_positive)

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(width <= 0 for width in self.hidden_sizes):
            raise ConfigError(_bad(self, "hidden_sizes", self.hidden_sizes, "must be positive widths, e.g. 64,64"))
        if self.network in ("atari-lstm", "mlp-separate") and self.algo != "a3c":
            raise ConfigError(_bad(self, "network", self.network, "this network is for --algo a3c only"))
        if not all(0 <= e <= 1 for e in self.epsilon_values) or not self.epsilon_values:
            raise ConfigError(_bad(self, "epsilon_values", self.epsilon_values, "must be rates in [0, 1]"))
        probabilities = self.epsilon_probabilities
        if len(probabilities) != len(self.epsilon_values) or min(probabilities) < 0 or abs(sum(probabilities) - 1) > 1e-6:
            raise ConfigError(_bad(self, "epsilon_probabilities", probabilities,
                                   f"must be {len(self.epsilon_values)} non-negative numbers summing to 1"))


@dataclass(frozen=True)
class ServerSecurity(_Checked):
    """Who may call the server: a bearer token, TLS, and mutual TLS (see README, "Running across a network you
    don't trust")."""

    auth_token_file: str = _setting(
        "", "a file holding the bearer token every call must carry (authorization metadata; health checks are "
        "exempt); '' accepts calls without one", check=_readable,
    )
    tls_cert: str = _setting("", "PEM certificate chain the server presents: serve TLS ('': plaintext)", check=_pem)
    tls_key: str = _setting("", "PEM private key of --tls-cert", check=_pem)
    tls_client_ca: str = _setting(
        "", "PEM CA certificates: with it (and --tls-cert), every client must present a certificate they signed "
        "(mutual TLS)", check=_pem,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError(_bad(self, "tls_key" if self.tls_cert else "tls_cert", "",
                                   "--tls-cert and --tls-key go together"))
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError(_bad(self, "tls_client_ca", self.tls_client_ca, "mutual TLS needs --tls-cert and --tls-key"))


@dataclass(frozen=True)
class ClientSecurity(_Checked):
    """How a client proves itself to the server and checks the server: the counterpart of ServerSecurity."""

    auth_token_file: str = _setting(
        "", "a file holding the server's bearer token, sent with every call ('': none)", check=_readable,
    )
    tls_ca: str = _setting(
        "", "PEM CA certificates to verify the server's certificate with: connect over TLS ('': plaintext)",
        check=_pem,
    )
    tls_client_cert: str = _setting("", "PEM certificate chain to present to a server that requires mutual TLS",
                                    check=_pem)
    tls_client_key: str = _setting("", "PEM private key of --tls-client-cert", check=_pem)

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.tls_client_cert) != bool(self.tls_client_key):
            raise ConfigError(_bad(self, "tls_client_key" if self.tls_client_cert else "tls_client_cert", "",
                                   "--tls-client-cert and --tls-client-key go together"))
        if self.tls_client_cert and not self.tls_ca:
            raise ConfigError(_bad(self, "tls_ca", "", "a client certificate is for TLS: set --tls-ca too"))


@dataclass(frozen=True)
class ClientOptions(ClientSecurity):
    """Where a client (a worker, `asyncrl status`, `asyncrl health`) finds the server, and how it connects."""

    server: str = _setting("127.0.0.1:50051", "parameter server address, HOST:PORT")


@dataclass(frozen=True)
class ServerOptions(ServerSecurity):
    """How the parameter-server daemon serves and persists a run."""

    host: str = _setting("127.0.0.1", "address to listen on ('0.0.0.0' for all interfaces)")
    port: int = _setting(50051, "port to listen on (0 picks a free one; see --port-file)", check=_port)
    port_file: str = _setting("", "write the bound port to this file once serving")
    checkpoint_dir: str = _setting("checkpoints", "directory for checkpoints")
    checkpoint_interval: float = _setting(60.0, "seconds between periodic checkpoints (0 disables)", check=_non_negative)
    keep_checkpoints: int = _setting(3, "how many recent checkpoints to keep", check=_positive)
    resume: bool = _setting(False, "continue from the newest checkpoint in --checkpoint-dir")
    max_message_mb: float = _setting(64.0, "largest gRPC message accepted or sent, in MiB", check=_positive)
    heartbeat_interval: float = _setting(5.0, "seconds between a worker's calls when idle", check=_positive)
    silence_timeout: float = _setting(30.0, "a worker silent this many seconds is reported dead", check=_positive)
    max_workers: int = _setting(
        0, "most workers registered at once (0: no limit); beyond it RegisterWorker is RESOURCE_EXHAUSTED, and a "
        "worker silent for --silence-timeout gives its slot to a newcomer", check=_non_negative,
    )
    linger: float = _setting(
        10.0, "seconds to keep serving after training ends, so every worker and status poller hears it", check=_non_negative
    )
    shutdown_grace: float = _setting(5.0, "seconds in-flight calls get to finish on shutdown", check=_non_negative)
    metrics_port: int = _setting(0, "serve Prometheus metrics at http://HOST:PORT/metrics (0: off)", check=_port)
    tensorboard_dir: str = _setting("", "write TensorBoard event files here ('': off)")
    shards: int = _setting(1, "shard processes the parameter server is split into (docs/sharding.md)", check=_positive)
    shard_index: int = _setting(0, "which shard this process is, 0 to --shards - 1 (0 registers workers and ends "
                                   "the run)", check=_non_negative)
    shard_addresses: str = _setting(
        "", "with --shards > 1, on shard 0: host:port of every shard, comma-separated, shard 0 first (the slice map "
        "RegisterWorker tells workers)",
    )
    shard_key_file: str = _setting(
        "", "with --shards > 1: a file of secret bytes every shard reads, from which the workers' secrets are derived",
        check=_readable,
    )
    log_level: str = _setting("INFO", "logging level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shard_index >= self.shards:
            raise ConfigError(_bad(self, "shard_index", self.shard_index, f"must be below --shards {self.shards}"))
        if self.shards > 1 and self.shard_index == 0:
            addresses = [a for a in self.shard_addresses.split(",") if a.strip()]
            if len(addresses) != self.shards:
                raise ConfigError(_bad(self, "shard_addresses", self.shard_addresses,
                                       f"needs {self.shards} comma-separated host:port addresses, one per shard"))
        if self.shards > 1 and not self.shard_key_file:
            raise ConfigError(_bad(self, "shard_key_file", "", "a sharded server needs a shard key file"))


@dataclass(frozen=True)
class WorkerOptions(ClientOptions):
    """How one worker daemon connects and acts."""

    algo: str = _setting(
        "", "the method this worker must run; refused if the server runs another (default: the server's)",
        choices=("",) + ALGORITHMS,
    )
    envs: int = _setting(1, "environment copies run by this worker (batched in one forward pass)", check=_positive)
    name: str = _setting("", "name shown in the server's status (default: host name and pid)")
    dtype: str = _setting("float32", "encoding for pulled weights and pushed gradients", choices=DTYPE_NAMES)
    rpc_deadline: float = _setting(10.0, "seconds before any single call is abandoned", check=_positive)
    max_backoff: float = _setting(10.0, "longest wait between retries when the server is unreachable", check=_positive)
    max_message_mb: float = _setting(256.0, "largest gRPC message sent or received, in MiB", check=_positive)
    sync: bool = _setting(
        False, "wait for each push's reply before the next rollout (the paper's ordering) instead of pushing while "
        "the next rollout runs",
    )
    eval: bool = _setting(
        False, "an evaluation worker: play the latest weights with the run's evaluation policy and report the "
        "episodes; no gradients, no frames toward T",
    )
    log_level: str = _setting("INFO", "logging level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class TrainOptions(ServerSecurity, ClientSecurity):
    """The local launcher: one server and N workers as separate processes on localhost, with the server's security
    settings for the server and the clients' for the workers and the launcher's own status calls (the server's
    certificate must then name 127.0.0.1)."""

    workers: int = _setting(2, "worker processes to start", check=_positive, shown="the preset's: 2")
    envs: int = _setting(4, "environment copies per worker (the preset's: 4 for classic, 8 for atari)",
                         check=_positive, shown="the preset's")
    eval_workers: int = _setting(0, "evaluation worker processes to start, one env copy each (see worker --eval)",
                                 check=_non_negative)
    run_dir: str = _setting("runs/latest", "directory for the CSV log, checkpoints and process logs")
    shards: int = _setting(1, "parameter-server shard processes (docs/sharding.md); the launcher makes their shard "
                              "key", check=_positive)
    progress_interval: float = _setting(2.0, "seconds between progress lines", check=_positive)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tls_cert and not self.tls_ca:
            raise ConfigError(_bad(self, "tls_ca", "", "the launcher and its workers need the CA of --tls-cert"))
        if self.tls_client_ca and not self.tls_client_cert:
            raise ConfigError(_bad(self, "tls_client_cert", "", "with --tls-client-ca, the launcher and its workers "
                                   "need a client certificate"))


Options = TypeVar("Options")


def view(cls: type[Options], options: Any) -> Options:
    """cls built from the same-named fields of options: e.g. the ServerSecurity part of TrainOptions."""
    return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _bad(obj: Any, name: str, value: Any, problem: str) -> str:
    return f"{flag_name(name)} ({env_name(name)}) = {value!r}: {problem}"


def _validate(obj: Any) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(_bad(obj, f.name, value, f"must be one of {', '.join(map(str, choices))}"))
        check: Callable[[Any], str | None] | None = f.metadata.get("check")
        if check is not None and value is not None and (problem := check(value)) is not None:
            raise ConfigError(_bad(obj, f.name, value, problem))


def _parser_for(annotation: Any) -> Callable[[str], Any]:
    """Turns one text value (a flag or an environment variable) into the field's type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(annotation) if a is not type(None))
        parse_inner = _parser_for(inner)
        return lambda text: None if text.strip().lower() in ("", "none") else parse_inner(text)
    if origin is tuple:
        (item, _) = typing.get_args(annotation)
        return lambda text: tuple(item(part) for part in text.split(",") if part.strip())
    if annotation is bool:
        return _parse_bool
    return annotation


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def add_arguments(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """Adds one flag per field of cls; values are parsed later by from_namespace."""
    group = parser.add_argument_group(title, cls.__doc__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if flag_name(f.name) in parser._option_string_actions:  # shared flag, e.g. --log-level
            continue
        default = f.default
        shown = f.metadata.get("shown", ",".join(map(str, default)) if isinstance(default, tuple) else default)
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "metavar": f.name.upper()}
        if hints[f.name] is bool:
            kwargs = {"dest": f.name, "default": None, "action": "store_const", "const": "true"}
        group.add_argument(
            flag_name(f.name), help=f"{f.metadata['help']} (default: {shown}; env {env_name(f.name)})", **kwargs
        )


def from_namespace(
    cls: type[Options], args: argparse.Namespace, environ: Mapping[str, str] = os.environ,
    defaults: Mapping[str, Any] | None = None,
) -> Options:
    """Builds cls from flags, falling back to ASYNCRL_* variables, then to defaults, then to the fields' own."""
    return cls(**{**(defaults or {}), **_read(cls, args, environ)})


def run_config_from(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ,
    image_observations: Callable[[str], bool] = lambda env_id: False,
    continuous_actions: Callable[[str], bool] = lambda env_id: False,
) -> RunConfig:
    """The RunConfig of flags and ASYNCRL_* variables on top of the preset for the env's family.

    The preset is --preset's, or the family that env_id (and, through image_observations
    and continuous_actions, its observation and action spaces) belongs to.
    """
    values = _read(RunConfig, args, environ)
    env_id = values.get("env_id", RunConfig.env_id)
    preset = values.get("preset") or family_of(env_id, image_observations(env_id), continuous_actions(env_id))
    if preset not in PRESETS:
        raise ConfigError(_bad(RunConfig, "preset", preset, f"must be one of {', '.join(PRESETS)}"))
    return RunConfig(**{**preset_defaults(preset, env_id), **values, "preset": preset})


def preset_baseline(config: RunConfig) -> dict[str, Any]:
    """What config's preset alone gives every field: the values a run with no other flag would have."""
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    return {**defaults, **preset_defaults(config.preset, config.env_id), "preset": config.preset}


def describe_preset(config: RunConfig) -> str:
    """One line for the start of a run: the preset, the values it set, and the fields set otherwise."""
    baseline = preset_baseline(config)
    preset = PRESETS[config.preset]
    own = [f"{name}={_text(baseline[name])}" for name in preset_defaults(config.preset, config.env_id)]
    changed = [f"{name}={_text(getattr(config, name))}" for name in baseline
               if name != "env_id" and getattr(config, name) != baseline[name]]
    return (f"preset {preset.name} ({preset.description}): {' '.join(own)}"
            + (f"; set by flag or environment: {' '.join(changed)}" if changed else ""))


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else ("none" if value is None else str(value))


def _read(cls: type, args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields set by a flag or, failing that, by an ASYNCRL_* variable, parsed to their types."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        text = getattr(args, f.name, None)
        source = flag_name(f.name)
        if text is None and env_name(f.name) in environ:
            text, source = environ[env_name(f.name)], env_name(f.name)
        if text is None:
            continue
        try:
            values[f.name] = _parser_for(hints[f.name])(text)
        except ValueError as error:
            raise ConfigError(f"{source} = {text!r}: expected {_describe(hints[f.name])} ({error})") from None
    return values


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is tuple:
        return "comma-separated integers"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return "a number or 'none'"
    return {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(annotation, str(annotation))


def to_cli_args(options: Any, baseline: Mapping[str, Any] | None = None) -> list[str]:
    """The flags that reproduce options in a child process: those that differ from baseline (default: the
    fields' own defaults; for a RunConfig, pass preset_baseline so that the child's preset gives the rest)."""
    args: list[str] = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if value == (baseline[f.name] if baseline is not None else f.default):
            continue
        if isinstance(value, bool):
            args += [flag_name(f.name)] if value else []
            continue
        args += [flag_name(f.name), _text(value)]
    return args
