"""The evaluation worker: plays the server's latest weights and reports the episodes, so a run scores its policy.

Training episodes are played with exploration (the Q methods' epsilons, 30% of copies at 0.5
in the paper's set-up; A3C's sampled actions), so their mean understates what the network
has learned. An evaluation worker registers with `evaluation` set and loops

    PullWeights (the latest version) -> play PLAY_STEPS steps per env copy -> ReportEvaluation

with the run's evaluation policy (RunConfig.eval_policy and eval_epsilon). It pushes no
gradients: its frames do not count toward T and its episodes not toward the training mean.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import torch

from asyncrl.common.algorithms import METHODS_BY_WIRE
from asyncrl.common.limits import MAX_EVAL_EPISODES_PER_REPORT
from asyncrl.common.models import build_model, flatten_parameters
from asyncrl.common.seeding import derive_seed
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.worker.actor import Actor
from asyncrl.worker.loop import run_until_done
from asyncrl.worker.client import GrpcConnection, Versions, load
from asyncrl.worker.policies import EvaluationPolicy

log = logging.getLogger(__name__)

# Agent steps per env copy between pulls: an episode is played with weights at most this many steps old.
PLAY_STEPS = 100


class EvaluationWorker:
    """E env copies playing the latest weights, reporting each finished episode's return."""

    def __init__(self, connection: GrpcConnection, name: str, num_envs: int, stop: threading.Event) -> None:
        self.connection = connection
        self.name = name
        self.num_envs = num_envs
        self.stop = stop
        self.actor: Actor | None = None
        self.model: torch.nn.Module | None = None
        self.weights = torch.empty(0)
        self.version: Versions | None = None  # None: no weights yet
        self.episodes_reported = 0

    def register(self) -> None:
        """(Re-)registers as an evaluation worker; the first registration builds the model and env copies."""
        reply = self.connection.register(self.name, self.num_envs, pb.ALGORITHM_UNSPECIFIED, evaluation=True)
        self.worker_id, config = reply.worker_id, reply.config
        self.version = None
        if self.actor is None:
            method = METHODS_BY_WIRE[config.algorithm]
            self.model = build_model(config.model)
            self.weights = flatten_parameters(self.model)
            seeds = [derive_seed(reply.seed, copy) for copy in range(self.num_envs)]
            policy = EvaluationPolicy(
                sample=config.eval_policy == "sample" and not method.value_based, epsilon=config.eval_epsilon,
                num_actions=config.model.num_actions, rng=np.random.default_rng(derive_seed(reply.seed, self.num_envs)),
                continuous=config.model.action_kind == pb.ACTION_KIND_CONTINUOUS,
            )
            self.actor = Actor(config.env_id, seeds, policy,
                               repeat_action_probability=config.repeat_action_probability)
            log.info("evaluating %s on %s: %s play, epsilon %g", method.name, config.env_id,
                     config.eval_policy or "greedy", config.eval_epsilon)
        log.info("registered as evaluation worker %d", self.worker_id)

    def run(self) -> int:
        """Plays and reports until the server says training is over or stop is set; returns 0."""
        return run_until_done(self)

    def progress(self) -> str:
        return f"{self.episodes_reported} evaluation episodes"

    def step(self) -> bool:
        """Takes the latest weights, plays PLAY_STEPS steps per copy, reports the episodes that ended; returns
        whether training is over."""
        assert self.model is not None and self.actor is not None
        reply = self.connection.pull(self.worker_id, self.version)
        if reply.training_done:
            return True
        if reply.weights:
            load(self.weights, reply.weights)
            self.version = reply.versions
        assert self.version is not None  # a first pull always brings the weights
        self.actor.rollout(self.model, PLAY_STEPS)
        episodes = self.actor.take_finished_episodes()
        done = False
        for start in range(0, len(episodes), MAX_EVAL_EPISODES_PER_REPORT):
            chunk = episodes[start:start + MAX_EVAL_EPISODES_PER_REPORT]
            done = self.connection.report_evaluation(self.worker_id, self.version[0], chunk).training_done
            self.episodes_reported += len(chunk)
        return done
