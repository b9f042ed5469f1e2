"""How a worker's call can end other than with its reply: one set of exceptions from the channel to the daemon.

ChannelCalls (asyncrl.worker.calls) turns a gRPC status into one of these; the RPC process
(asyncrl.worker.rpc_process) carries it to the worker as a status byte and its details
(`encode`, `decode`) and raises the same exception there; the worker loop and the daemon
act on them. None of them is a grpc.RpcError: past the channel nothing is gRPC's.

This module does not import torch or grpc, so that the RPC process stays small.
"""

from __future__ import annotations


class CallFailed(Exception):
    """A call that did not get its reply and will not by being sent again as it is."""

    # Set on a sharded push's outcome when shard 0 applied it (taking its episodes) while another shard refused it.
    episodes_taken: bool = False

    def __init__(self, details: str = "") -> None:
        super().__init__(details)
        self.details = details


class UnknownWorker(CallFailed):
    """NOT_FOUND: the server (or one of its shards) does not know this worker id, as after a restart: register
    again."""


class StaleGradients(CallFailed):
    """ABORTED: gradients computed against too old a version: pull and compute them again."""


class Refused(CallFailed):
    """Any other refusal (bad token, wrong role, a bound broken): a misconfiguration or a bug, reported, not
    retried."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code  # the gRPC status code's name, e.g. "PERMISSION_DENIED"

    def __str__(self) -> str:
        return f"{self.code}: {self.details}"


class RpcProcessDied(CallFailed):
    """The child process that makes the worker's calls exited: the worker cannot reach the server."""


class Stopped(Exception):
    """The worker was asked to stop while a call waited to be retried: not a failure."""


# The status byte of the RPC process's reply frames: 0 is a reply; the others, an outcome above.
REPLY = 0
_KINDS: tuple[type[Exception], ...] = (UnknownWorker, StaleGradients, Stopped, Refused)


def encode(outcome: Exception) -> tuple[int, bytes]:
    """An outcome as (status byte, payload) for the RPC process's reply frame."""
    kind = type(outcome)
    if kind not in _KINDS:
        raise TypeError(f"not a call outcome: {outcome!r}")
    if isinstance(outcome, Refused):
        payload = f"{outcome.code} {outcome.details}"
    else:
        payload = outcome.details if isinstance(outcome, CallFailed) else ""
    return _KINDS.index(kind) + 1, payload.encode()


def decode(status: int, payload: bytes) -> Exception:
    """The outcome a (status byte, payload) frame of encode's stands for."""
    kind, text = _KINDS[status - 1], payload.decode()
    if kind is Refused:
        code, _, details = text.partition(" ")
        return Refused(code, details)
    if kind is Stopped:
        return Stopped()
    return kind(text)
