from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[Dtype]
    DTYPE_FLOAT32: _ClassVar[Dtype]
    DTYPE_FLOAT16: _ClassVar[Dtype]
    DTYPE_BFLOAT16: _ClassVar[Dtype]

class Algorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALGORITHM_UNSPECIFIED: _ClassVar[Algorithm]
    ALGORITHM_A3C: _ClassVar[Algorithm]
    ALGORITHM_ONE_STEP_Q: _ClassVar[Algorithm]
    ALGORITHM_ONE_STEP_SARSA: _ClassVar[Algorithm]
    ALGORITHM_N_STEP_Q: _ClassVar[Algorithm]

class ActionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_KIND_UNSPECIFIED: _ClassVar[ActionKind]
    ACTION_KIND_DISCRETE: _ClassVar[ActionKind]
    ACTION_KIND_CONTINUOUS: _ClassVar[ActionKind]
DTYPE_UNSPECIFIED: Dtype
DTYPE_FLOAT32: Dtype
DTYPE_FLOAT16: Dtype
DTYPE_BFLOAT16: Dtype
ALGORITHM_UNSPECIFIED: Algorithm
ALGORITHM_A3C: Algorithm
ALGORITHM_ONE_STEP_Q: Algorithm
ALGORITHM_ONE_STEP_SARSA: Algorithm
ALGORITHM_N_STEP_Q: Algorithm
ACTION_KIND_UNSPECIFIED: ActionKind
ACTION_KIND_DISCRETE: ActionKind
ACTION_KIND_CONTINUOUS: ActionKind

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: Dtype
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: Dtype
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[Dtype, str]] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("architecture", "observation_shape", "num_actions", "hidden_sizes", "layout", "action_kind", "action_dim", "action_low", "action_high")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZES_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    ACTION_KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_DIM_FIELD_NUMBER: _ClassVar[int]
    ACTION_LOW_FIELD_NUMBER: _ClassVar[int]
    ACTION_HIGH_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    observation_shape: _containers.RepeatedScalarFieldContainer[int]
    num_actions: int
    hidden_sizes: _containers.RepeatedScalarFieldContainer[int]
    layout: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    action_kind: ActionKind
    action_dim: int
    action_low: _containers.RepeatedScalarFieldContainer[float]
    action_high: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, architecture: _Optional[str] = ..., observation_shape: _Optional[_Iterable[int]] = ..., num_actions: _Optional[int] = ..., hidden_sizes: _Optional[_Iterable[int]] = ..., layout: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., action_kind: _Optional[_Union[ActionKind, str]] = ..., action_dim: _Optional[int] = ..., action_low: _Optional[_Iterable[float]] = ..., action_high: _Optional[_Iterable[float]] = ...) -> None: ...

class RunConfig(_message.Message):
    __slots__ = ("algorithm", "env_id", "gamma", "t_max", "entropy_beta", "value_loss_coef", "max_frames", "max_staleness", "max_message_bytes", "model", "async_update", "target_update_frames", "epsilon_values", "epsilon_probabilities", "epsilon_anneal_frames", "repeat_action_probability", "clip_rewards", "eval_policy", "eval_epsilon", "reward_scale")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    T_MAX_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_BETA_FIELD_NUMBER: _ClassVar[int]
    VALUE_LOSS_COEF_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ASYNC_UPDATE_FIELD_NUMBER: _ClassVar[int]
    TARGET_UPDATE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_VALUES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_ANNEAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    REPEAT_ACTION_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CLIP_REWARDS_FIELD_NUMBER: _ClassVar[int]
    EVAL_POLICY_FIELD_NUMBER: _ClassVar[int]
    EVAL_EPSILON_FIELD_NUMBER: _ClassVar[int]
    REWARD_SCALE_FIELD_NUMBER: _ClassVar[int]
    algorithm: Algorithm
    env_id: str
    gamma: float
    t_max: int
    entropy_beta: float
    value_loss_coef: float
    max_frames: int
    max_staleness: int
    max_message_bytes: int
    model: ModelSpec
    async_update: int
    target_update_frames: int
    epsilon_values: _containers.RepeatedScalarFieldContainer[float]
    epsilon_probabilities: _containers.RepeatedScalarFieldContainer[float]
    epsilon_anneal_frames: int
    repeat_action_probability: float
    clip_rewards: bool
    eval_policy: str
    eval_epsilon: float
    reward_scale: float
    def __init__(self, algorithm: _Optional[_Union[Algorithm, str]] = ..., env_id: _Optional[str] = ..., gamma: _Optional[float] = ..., t_max: _Optional[int] = ..., entropy_beta: _Optional[float] = ..., value_loss_coef: _Optional[float] = ..., max_frames: _Optional[int] = ..., max_staleness: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ..., async_update: _Optional[int] = ..., target_update_frames: _Optional[int] = ..., epsilon_values: _Optional[_Iterable[float]] = ..., epsilon_probabilities: _Optional[_Iterable[float]] = ..., epsilon_anneal_frames: _Optional[int] = ..., repeat_action_probability: _Optional[float] = ..., clip_rewards: _Optional[bool] = ..., eval_policy: _Optional[str] = ..., eval_epsilon: _Optional[float] = ..., reward_scale: _Optional[float] = ...) -> None: ...

class RegisterWorkerRequest(_message.Message):
    __slots__ = ("name", "num_envs", "accepted_dtypes", "algorithm", "evaluation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_DTYPES_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    num_envs: int
    accepted_dtypes: _containers.RepeatedScalarFieldContainer[Dtype]
    algorithm: Algorithm
    evaluation: bool
    def __init__(self, name: _Optional[str] = ..., num_envs: _Optional[int] = ..., accepted_dtypes: _Optional[_Iterable[_Union[Dtype, str]]] = ..., algorithm: _Optional[_Union[Algorithm, str]] = ..., evaluation: _Optional[bool] = ...) -> None: ...

class RegisterWorkerResponse(_message.Message):
    __slots__ = ("worker_id", "seed", "config", "heartbeat_interval_seconds", "worker_secret", "shards")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKER_SECRET_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: int
    seed: int
    config: RunConfig
    heartbeat_interval_seconds: float
    worker_secret: bytes
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    def __init__(self, worker_id: _Optional[int] = ..., seed: _Optional[int] = ..., config: _Optional[_Union[RunConfig, _Mapping]] = ..., heartbeat_interval_seconds: _Optional[float] = ..., worker_secret: _Optional[bytes] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ...) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("address", "offset", "length")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    address: str
    offset: int
    length: int
    def __init__(self, address: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class PullWeightsRequest(_message.Message):
    __slots__ = ("worker_id", "have_version", "dtype", "have_target_version", "worker_secret", "sliced")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    HAVE_TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_SECRET_FIELD_NUMBER: _ClassVar[int]
    SLICED_FIELD_NUMBER: _ClassVar[int]
    worker_id: int
    have_version: int
    dtype: Dtype
    have_target_version: int
    worker_secret: bytes
    sliced: bool
    def __init__(self, worker_id: _Optional[int] = ..., have_version: _Optional[int] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., have_target_version: _Optional[int] = ..., worker_secret: _Optional[bytes] = ..., sliced: _Optional[bool] = ...) -> None: ...

class PullWeightsResponse(_message.Message):
    __slots__ = ("version", "parameters", "global_frames", "training_done", "target_version", "target_parameters")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DONE_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    version: int
    parameters: _containers.RepeatedCompositeFieldContainer[Tensor]
    global_frames: int
    training_done: bool
    target_version: int
    target_parameters: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, version: _Optional[int] = ..., parameters: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., global_frames: _Optional[int] = ..., training_done: _Optional[bool] = ..., target_version: _Optional[int] = ..., target_parameters: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class EpisodeResult(_message.Message):
    __slots__ = ("episode_return", "length")
    EPISODE_RETURN_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    episode_return: float
    length: int
    def __init__(self, episode_return: _Optional[float] = ..., length: _Optional[int] = ...) -> None: ...

class PushGradientsRequest(_message.Message):
    __slots__ = ("worker_id", "base_version", "sequence_number", "frames", "gradients", "episodes", "reply_weights_dtype", "epsilons", "metrics", "worker_secret", "sliced", "gradient_norm")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    REPLY_WEIGHTS_DTYPE_FIELD_NUMBER: _ClassVar[int]
    EPSILONS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    WORKER_SECRET_FIELD_NUMBER: _ClassVar[int]
    SLICED_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_NORM_FIELD_NUMBER: _ClassVar[int]
    worker_id: int
    base_version: int
    sequence_number: int
    frames: int
    gradients: _containers.RepeatedCompositeFieldContainer[Tensor]
    episodes: _containers.RepeatedCompositeFieldContainer[EpisodeResult]
    reply_weights_dtype: Dtype
    epsilons: _containers.RepeatedScalarFieldContainer[float]
    metrics: _containers.ScalarMap[str, float]
    worker_secret: bytes
    sliced: bool
    gradient_norm: float
    def __init__(self, worker_id: _Optional[int] = ..., base_version: _Optional[int] = ..., sequence_number: _Optional[int] = ..., frames: _Optional[int] = ..., gradients: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., episodes: _Optional[_Iterable[_Union[EpisodeResult, _Mapping]]] = ..., reply_weights_dtype: _Optional[_Union[Dtype, str]] = ..., epsilons: _Optional[_Iterable[float]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., worker_secret: _Optional[bytes] = ..., sliced: _Optional[bool] = ..., gradient_norm: _Optional[float] = ...) -> None: ...

class PushGradientsResponse(_message.Message):
    __slots__ = ("version", "global_frames", "training_done", "parameters", "target_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DONE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    global_frames: int
    training_done: bool
    parameters: _containers.RepeatedCompositeFieldContainer[Tensor]
    target_version: int
    def __init__(self, version: _Optional[int] = ..., global_frames: _Optional[int] = ..., training_done: _Optional[bool] = ..., parameters: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., target_version: _Optional[int] = ...) -> None: ...

class ReportEvaluationRequest(_message.Message):
    __slots__ = ("worker_id", "version", "episodes", "worker_secret")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    WORKER_SECRET_FIELD_NUMBER: _ClassVar[int]
    worker_id: int
    version: int
    episodes: _containers.RepeatedCompositeFieldContainer[EpisodeResult]
    worker_secret: bytes
    def __init__(self, worker_id: _Optional[int] = ..., version: _Optional[int] = ..., episodes: _Optional[_Iterable[_Union[EpisodeResult, _Mapping]]] = ..., worker_secret: _Optional[bytes] = ...) -> None: ...

class ReportEvaluationResponse(_message.Message):
    __slots__ = ("training_done", "version")
    TRAINING_DONE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    training_done: bool
    version: int
    def __init__(self, training_done: _Optional[bool] = ..., version: _Optional[int] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: RunConfig
    def __init__(self, config: _Optional[_Union[RunConfig, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("worker_id", "name", "num_envs", "seconds_since_last_seen", "alive", "pushes_applied", "epsilons", "evaluation", "episodes_reported")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    PUSHES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    EPSILONS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    EPISODES_REPORTED_FIELD_NUMBER: _ClassVar[int]
    worker_id: int
    name: str
    num_envs: int
    seconds_since_last_seen: float
    alive: bool
    pushes_applied: int
    epsilons: _containers.RepeatedScalarFieldContainer[float]
    evaluation: bool
    episodes_reported: int
    def __init__(self, worker_id: _Optional[int] = ..., name: _Optional[str] = ..., num_envs: _Optional[int] = ..., seconds_since_last_seen: _Optional[float] = ..., alive: _Optional[bool] = ..., pushes_applied: _Optional[int] = ..., epsilons: _Optional[_Iterable[float]] = ..., evaluation: _Optional[bool] = ..., episodes_reported: _Optional[int] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("global_frames", "version", "updates_applied", "updates_rejected", "live_workers", "workers", "mean_return_100", "episodes_completed", "frames_per_second", "updates_per_second", "training_done", "uptime_seconds", "learning_rate", "metrics", "checkpoint_failures", "registered_workers", "max_workers", "eval_mean_return", "eval_episodes_completed", "eval_window", "shard_index", "shards")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    GLOBAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    UPDATES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    LIVE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    MEAN_RETURN_100_FIELD_NUMBER: _ClassVar[int]
    EPISODES_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    UPDATES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DONE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_WORKERS_FIELD_NUMBER: _ClassVar[int]
    EVAL_MEAN_RETURN_FIELD_NUMBER: _ClassVar[int]
    EVAL_EPISODES_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    EVAL_WINDOW_FIELD_NUMBER: _ClassVar[int]
    SHARD_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    global_frames: int
    version: int
    updates_applied: int
    updates_rejected: int
    live_workers: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatus]
    mean_return_100: float
    episodes_completed: int
    frames_per_second: float
    updates_per_second: float
    training_done: bool
    uptime_seconds: float
    learning_rate: float
    metrics: _containers.ScalarMap[str, float]
    checkpoint_failures: int
    registered_workers: int
    max_workers: int
    eval_mean_return: float
    eval_episodes_completed: int
    eval_window: int
    shard_index: int
    shards: int
    def __init__(self, global_frames: _Optional[int] = ..., version: _Optional[int] = ..., updates_applied: _Optional[int] = ..., updates_rejected: _Optional[int] = ..., live_workers: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerStatus, _Mapping]]] = ..., mean_return_100: _Optional[float] = ..., episodes_completed: _Optional[int] = ..., frames_per_second: _Optional[float] = ..., updates_per_second: _Optional[float] = ..., training_done: _Optional[bool] = ..., uptime_seconds: _Optional[float] = ..., learning_rate: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., checkpoint_failures: _Optional[int] = ..., registered_workers: _Optional[int] = ..., max_workers: _Optional[int] = ..., eval_mean_return: _Optional[float] = ..., eval_episodes_completed: _Optional[int] = ..., eval_window: _Optional[int] = ..., shard_index: _Optional[int] = ..., shards: _Optional[int] = ...) -> None: ...
