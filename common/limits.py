"""The wire contract's bounds on request fields: the server enforces them, the workers keep within them.

Every number a client sends is bounded, so that no request can overflow a counter, grow
the server's memory or its status replies without limit, or end the run for everyone
(a push claiming 2**62 frames). parameter_server.proto states the same bounds.
"""

from __future__ import annotations

import torch

from asyncrl.common.algorithms import METHODS_BY_WIRE
from asyncrl.common.envs import ATARI_FRAME_SKIP, is_atari
from asyncrl.common.tensors import FlatLayout
from asyncrl.v1 import parameter_server_pb2 as pb

INT64_MAX = 2**63 - 1
MAX_NUM_ENVS = 1024
MAX_NAME_LENGTH = 128
MAX_ACCEPTED_DTYPES = 16
# A push may claim up to twice what its worker's env copies make in one rollout: room for a worker
# that counts a little differently (an extra step at an episode's end), none for one that invents frames.
PUSH_SLACK = 2
# Sanity, not authenticity: large enough for any real game's score (Atlantis, Video Pinball ~1e6-1e7),
# small enough that sums of them stay exact in a double. A client that lies within it is an auth matter.
MAX_EPISODE_RETURN = 1e9
MAX_EPISODE_LENGTH = 10**9
MAX_EVAL_EPISODES_PER_REPORT = 1024
MAX_METRICS = 16
MAX_METRIC_VALUE = 1e12
# An EpisodeResult on the wire at most (a double, an int64 varint, their tags, its own tag and length).
MAX_EPISODE_RESULT_BYTES = 24
# Room in a request for every other bounded field (epsilons, metrics, names, the secret): far more than they take.
REQUEST_ROOM_BYTES = 2**20
# A sharded push states its whole gradient's norm (PushGradientsRequest.gradient_norm): far above any real one's.
MAX_GRADIENT_NORM = 1e30


def frames_per_agent_step(config: pb.RunConfig) -> int:
    """Env frames one agent step covers: T counts emulator frames, and an Atari step repeats its action 4 times."""
    return ATARI_FRAME_SKIP if is_atari(config.env_id) else 1


def agent_steps_per_push(config: pb.RunConfig, num_envs: int) -> int:
    """Agent steps one rollout of num_envs copies takes: t_max each (A3C, n-step Q), or async_update (one-step)."""
    return num_envs * METHODS_BY_WIRE[config.algorithm].rollout_steps(config)


def max_frames_per_push(config: pb.RunConfig, num_envs: int) -> int:
    """The most frames one push of a worker with num_envs copies may add to T."""
    return PUSH_SLACK * agent_steps_per_push(config, num_envs) * frames_per_agent_step(config)


def max_episodes_per_push(config: pb.RunConfig, num_envs: int, frames: int | None = None) -> int:
    """The most episode results one push may carry: an env copy ends at most one episode per agent step.

    So at most PUSH_SLACK x the agent steps of one rollout of num_envs copies and, given the push's
    frames, at most PUSH_SLACK x the agent steps those frames cover (frames // frames per agent
    step): a push claiming 1 frame reports at most 2 episodes, whatever its worker's env copies.
    The slack is for the episodes of a refused push, sent again with the next one (the reference
    worker does so, and caps each push at this bound for its frames).
    """
    most = PUSH_SLACK * agent_steps_per_push(config, num_envs)
    if frames is not None:
        most = min(most, PUSH_SLACK * (frames // frames_per_agent_step(config)))
    return most


def max_request_bytes(config: pb.RunConfig, layout: FlatLayout) -> int:
    """The largest request a worker of this run can send: a push of the whole layout's gradients in float32 with
    the most episodes MAX_NUM_ENVS copies may report, and REQUEST_ROOM_BYTES for the other fields. The server
    receives nothing larger (RESOURCE_EXHAUSTED), so a client cannot make it buffer a message no valid worker sends."""
    gradients = pb.PushGradientsRequest(gradients=layout.encode(torch.zeros(layout.total))).ByteSize()
    return gradients + MAX_EPISODE_RESULT_BYTES * max_episodes_per_push(config, MAX_NUM_ENVS) + REQUEST_ROOM_BYTES
