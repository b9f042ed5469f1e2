"""The worker loop: register, then pull when stale, roll out, compute the loss's gradients and push, until done."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass

import numpy as np
import torch

from asyncrl.common.algorithms import METHODS, METHODS_BY_WIRE
from asyncrl.common.config import WorkerOptions
from asyncrl.common.diagnostics import GRAD_NORM, DeadUnits, gradient_norm
from asyncrl.common.limits import max_episodes_per_push
from asyncrl.common.models import build_model, flatten_gradients, flatten_parameters
from asyncrl.common.seeding import derive_seed
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.worker.actor import Actor
from asyncrl.worker.policies import EpsilonGreedyPolicy, GaussianPolicy, SoftmaxPolicy, draw_final_epsilon
from asyncrl.worker.client import Connection, GrpcConnection, PendingPush, ServerReply, Update, Versions, load
from asyncrl.worker.evaluation_worker import EvaluationWorker
from asyncrl.worker.loop import run_until_done
from asyncrl.worker.outcomes import CallFailed, Refused, StaleGradients, UnknownWorker
from asyncrl.worker.rpc_process import ProcessCalls

log = logging.getLogger(__name__)


class Worker:
    """One worker: a local model copy (and target network copy) and E env copies, driven by a server's replies."""

    def __init__(
        self, connection: Connection, name: str, num_envs: int, stop: threading.Event, algo: str = "",
        overlap: bool = True,
    ) -> None:
        self.connection = connection
        self.name = name
        self.num_envs = num_envs
        self.stop = stop
        self.algo = algo  # "" implements whatever the server runs
        self.actor: Actor | None = None
        self.model: torch.nn.Module | None = None
        self.target_model: torch.nn.Module | None = None
        # The models' parameters (and the online model's gradients) live in flat vectors in the wire layout.
        self.weights = self.gradients = self.target_weights = torch.empty(0)
        self.policy: EpsilonGreedyPolicy | SoftmaxPolicy | GaussianPolicy | None = None
        self.pending_episodes: list[tuple[float, int]] = []
        self.pushes = 0
        # With overlap, a push travels while the next rollout is collected (with the weights the push's
        # reply replaces as soon as it arrives): the RPC's latency hides behind compute, for one more
        # version of policy lag. Without it, each rollout waits for the previous push's reply.
        self.overlap = overlap
        self.in_flight: _PushInFlight | None = None

    def register(self) -> pb.RegisterWorkerResponse:
        """(Re-)registers. The first registration builds the models and env copies; later ones keep them."""
        wire = METHODS[self.algo].wire if self.algo else pb.ALGORITHM_UNSPECIFIED
        reply = self.connection.register(self.name, self.num_envs, wire)
        self.worker_id, self.config = reply.worker_id, reply.config
        self.method = METHODS_BY_WIRE[self.config.algorithm]
        # A version per shard (one for a server of one process); None: no weights yet, or a refused push: pull all.
        self.version: Versions | None = None
        self.target_version: Versions | None = None
        self.server_target_version: Versions = ()
        if self.actor is None:
            self._build(reply.seed)
        log.info("registered as worker %d (seed %d) for %s on %s", self.worker_id, reply.seed,
                 self.method.name, self.config.env_id)
        return reply

    def _build(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = build_model(self.config.model)
        names = [name for name, _ in self.model.named_parameters()]
        if names != [spec.name for spec in self.config.model.layout]:
            raise RuntimeError(f"the server's parameter layout {[s.name for s in self.config.model.layout]} is not "
                               f"this worker's {names}: a server and worker of different asyncrl versions?")
        self.weights, self.gradients = flatten_parameters(self.model), flatten_gradients(self.model)
        self.dead_units = DeadUnits(self.model)
        seeds = [derive_seed(seed, copy) for copy in range(self.num_envs)]
        rng = np.random.default_rng(derive_seed(seed, self.num_envs))
        if self.method.value_based:
            self.target_model = build_model(self.config.model)
            self.target_weights = flatten_parameters(self.target_model)
            finals = [
                draw_final_epsilon(np.random.default_rng(s), self.config.epsilon_values,
                                   self.config.epsilon_probabilities)
                for s in seeds
            ]
            self.policy = EpsilonGreedyPolicy(finals, self.config.epsilon_anneal_frames,
                                              self.config.model.num_actions, rng)
            log.info("final epsilons of the env copies: %s", ", ".join(f"{e:g}" for e in finals))
        else:
            continuous = self.config.model.action_kind == pb.ACTION_KIND_CONTINUOUS
            self.policy = GaussianPolicy(rng) if continuous else SoftmaxPolicy(rng)
        self.actor = Actor(
            self.config.env_id, seeds, self.policy, choose_ahead=self.method.on_policy_bootstrap,
            clip_rewards=self.config.clip_rewards, repeat_action_probability=self.config.repeat_action_probability,
            reward_scale=self.config.reward_scale or 1.0,  # 0: a server that predates the field
        )

    def run(self) -> int:
        """Loops until the server says training is over (returns 0) or stop is set (returns 0)."""
        return run_until_done(self)

    def progress(self) -> str:
        return f"{self.pushes} pushes"

    def step(self) -> bool:
        """One update: roll out with the current weights, push the gradients, take the new weights.

        Returns True when training is over. A push's reply carries the parameters after the
        update, so the worker pulls only when its weights are out of date: at the start, after
        a refused push, and when the server's target network has changed. Then the reply of the
        push in flight is taken first, as it may bring them.
        """
        assert self.model is not None and self.actor is not None
        if self._out_of_date():
            reply = self._take_push_reply()
            if reply is None or (not reply.training_done and self._out_of_date()):
                reply = self.connection.pull(self.worker_id, self.version, self.target_version)
                self._load(reply)
            if reply.training_done:
                return True
        assert self.version is not None
        base_versions = self.version
        rollout = self.actor.rollout(self.model, self.method.rollout_steps(self.config))
        with self.dead_units.measuring():
            loss = self.method.loss(self.model, self.target_model, rollout, self.config)
        self.gradients.zero_()
        loss.total.backward()
        metrics = {**loss.metrics(), GRAD_NORM: gradient_norm(self.gradients), **self.dead_units.metrics()}
        self.pending_episodes += self.actor.take_finished_episodes()
        # With overlap, the previous push's reply is taken only now, so that it travelled during the rollout.
        reply = self._take_push_reply()
        if reply is not None and reply.training_done:
            return True
        # At most what the contract allows one push; the rest (only after refused pushes) goes with the next.
        frames = rollout.steps * self.actor.frames_per_step
        most = max_episodes_per_push(self.config, self.num_envs, frames)
        episodes, self.pending_episodes = self.pending_episodes[:most], self.pending_episodes[most:]
        epsilons = self.policy.epsilons.tolist() if isinstance(self.policy, EpsilonGreedyPolicy) else []
        update = Update(base_versions, frames, self.gradients, episodes, epsilons, metrics)
        self.in_flight = _PushInFlight(self.connection.start_push(self.worker_id, update), episodes)
        if self.overlap:
            return False
        reply = self._take_push_reply()
        assert reply is not None
        return reply.training_done

    def _out_of_date(self) -> bool:
        """No weights (none yet, or a push was refused), or the server's target network is not the worker's."""
        return self.version is None or (self.method.value_based and self.target_version != self.server_target_version)

    def _take_push_reply(self) -> ServerReply | None:
        """Waits for the reply of the push in flight and loads it; None when no push is in flight.

        A refused push gives its episodes back to the next one (unless shard 0 of a sharded server
        took them), forgets the worker's versions, so that the next step pulls, and is raised.
        """
        if self.in_flight is None:
            return None
        push, self.in_flight = self.in_flight, None
        try:
            reply = push.reply.result()
        except (StaleGradients, UnknownWorker) as refusal:
            if not refusal.episodes_taken:
                self.pending_episodes = push.episodes + self.pending_episodes
            self.version = None
            raise
        self.pushes += 1
        self._load(reply)
        return reply

    def _load(self, reply: ServerReply) -> None:
        """Loads a reply's weights and target weights, if any, and what it says of the server's target network and
        T."""
        assert self.model is not None
        if reply.weights:
            load(self.weights, reply.weights)
            self.version = reply.versions
        if reply.target_weights and self.target_model is not None:
            load(self.target_weights, reply.target_weights)
            self.target_version = reply.target_versions
        self.server_target_version = reply.target_versions
        if isinstance(self.policy, EpsilonGreedyPolicy):
            self.policy.set_global_frames(reply.global_frames)


@dataclass(frozen=True)
class _PushInFlight:
    """A push on its way, and the episodes it reports (given back to the next push if it is refused)."""

    reply: PendingPush
    episodes: list[tuple[float, int]]


def run_worker(options: WorkerOptions) -> int:
    """The `asyncrl worker` daemon: one thread of torch, SIGTERM/SIGINT stop it cleanly, exit 0 when done."""
    torch.set_num_threads(1)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    name = options.name or f"{socket.gethostname()}-{os.getpid()}"

    def calls_to(address: str) -> ProcessCalls:  # the server, and each shard of a sharded one
        return ProcessCalls(dataclasses.replace(options, server=address), stop, seed=os.getpid())

    connection = GrpcConnection(options.dtype, calls_to(options.server), connect=calls_to)
    worker: Worker | EvaluationWorker
    if options.eval:
        worker = EvaluationWorker(connection, name, options.envs, stop)
    else:
        worker = Worker(connection, name, options.envs, stop, options.algo, overlap=not options.sync)
    try:
        return worker.run()
    except Refused as refusal:  # not transient: a misconfiguration the operator must fix
        log.error("server %s refused this worker: %s", options.server, refusal)
        return 1
    except CallFailed as failure:  # the RPC process died
        log.error("%s", failure)
        return 1
    finally:
        stop.set()
        connection.close()  # ends the RPC process
