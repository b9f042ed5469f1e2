"""The worker loop: register, then pull when stale, roll out, compute the loss's gradients and push, until done."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

import numpy as np
import torch

from asyncrl.common.algorithms import a3c
from asyncrl.common.config import WorkerOptions
from asyncrl.common.models import build_model
from asyncrl.common.seeding import derive_seed
from asyncrl.common.wire import ALGORITHM_ENUMS
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.worker.actor import Actor
from asyncrl.worker.policies import SoftmaxPolicy
from asyncrl.worker.client import Connection, GrpcConnection, ServerReply, StaleGradients, Stopped, UnknownWorker

log = logging.getLogger(__name__)


class Worker:
    """One worker: a local model copy and E env copies, driven by a parameter server's replies."""

    def __init__(self, connection: Connection, name: str, num_envs: int, stop: threading.Event) -> None:
        self.connection = connection
        self.name = name
        self.num_envs = num_envs
        self.stop = stop
        self.actor: Actor | None = None
        self.model: torch.nn.Module | None = None
        self.pending_episodes: list[tuple[float, int]] = []
        self.frames_pushed = 0
        self.pushes = 0

    def register(self) -> pb.RegisterWorkerResponse:
        """(Re-)registers. The first registration builds the model and env copies; later ones keep them."""
        reply = self.connection.register(self.name, self.num_envs, ALGORITHM_ENUMS["a3c"])
        self.worker_id, self.config = reply.worker_id, reply.config
        self.sequence_number, self.version = 0, -1
        if self.actor is None:
            torch.manual_seed(reply.seed)
            self.model = build_model(self.config.model)
            seeds = [derive_seed(reply.seed, copy) for copy in range(self.num_envs)]
            self.actor = Actor(self.config.env_id, seeds, SoftmaxPolicy(np.random.default_rng(seeds[0])))
        log.info("registered as worker %d (seed %d) for %s on %s", self.worker_id, reply.seed,
                 pb.Algorithm.Name(self.config.algorithm), self.config.env_id)
        return reply

    def run(self) -> int:
        """Loops until the server says training is over (returns 0) or stop is set (returns 0)."""
        try:
            self.register()
            while not self.stop.is_set():
                try:
                    if self.step():
                        log.info("server says training is over after %d pushes; exiting", self.pushes)
                        return 0
                except UnknownWorker:
                    log.warning("server no longer knows worker %d; registering again", self.worker_id)
                    self.register()
                except StaleGradients as stale:
                    log.info("push refused as stale (%s); pulling again", stale)
        except Stopped:
            pass
        finally:
            if self.actor is not None:
                self.actor.close()
        log.info("stopped after %d pushes", self.pushes)
        return 0

    def step(self) -> bool:
        """One update: roll out t_max steps with the current weights, push the gradients, take the new weights.

        Returns True when training is over. The push's reply carries the parameters after
        the update, so a pull is needed only at the start and after a refused push.
        """
        assert self.model is not None and self.actor is not None
        if self.version < 0:
            if self._sync(self.connection.pull(self.worker_id, self.version)):
                return True
        rollout = self.actor.rollout(self.model, self.config.t_max)
        loss = a3c.rollout_loss(
            self.model, rollout, self.config.gamma, self.config.entropy_beta, self.config.value_loss_coef
        )
        self.model.zero_grad(set_to_none=False)
        loss.total.backward()
        self.pending_episodes += self.actor.take_finished_episodes()
        self.sequence_number += 1
        base_version, self.version = self.version, -1  # until the reply's weights arrive
        reply = self.connection.push(
            self.worker_id,
            base_version,
            self.sequence_number,
            rollout.frames,
            [p.grad for p in self.model.parameters()],
            self.pending_episodes,
        )
        self.pending_episodes = []
        self.frames_pushed += rollout.frames
        self.pushes += 1
        return self._sync(reply)

    def _sync(self, reply: ServerReply) -> bool:
        """Loads the reply's weights, if any; returns whether training is over."""
        assert self.model is not None
        if reply.weights is not None:
            with torch.no_grad():
                for parameter, weight in zip(self.model.parameters(), reply.weights):
                    parameter.copy_(weight)
            self.version = reply.version
        return reply.training_done

def run_worker(options: WorkerOptions) -> int:
    """The `asyncrl worker` daemon: one thread of torch, SIGTERM/SIGINT stop it cleanly, exit 0 when done."""
    torch.set_num_threads(1)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: stop.set())
    name = options.name or f"{socket.gethostname()}-{os.getpid()}"
    connection = GrpcConnection(options, stop, seed=os.getpid())
    try:
        return Worker(connection, name, options.envs, stop).run()
    finally:
        connection.close()
