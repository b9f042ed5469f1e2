"""How a worker's call can end other than with its reply: one set of exceptions from the channel to the daemon.

ChannelCalls (asyncrl.worker.calls) turns a gRPC status into one of these; the RPC process
(asyncrl.worker.rpc_process) carries it to the worker as a fixed header (`HEADER`: the
outcome's kind, the gRPC status code's number, the length of the details) and the details'
bytes, and raises the same exception there; the worker loop and the daemon act on them.
Nothing is parsed out of a string. None of them is a grpc.RpcError: past the channel nothing
is gRPC's.

This module does not import torch, so that the RPC process stays small.
"""

from __future__ import annotations

import struct

import grpc


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

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}  # by the number that crosses the pipe


class RpcProcessDied(CallFailed):
    """The child process that makes the worker's calls exited: the worker cannot reach the server."""


class Stopped(Exception):
    """The worker was asked to stop while a call waited to be retried: not a failure."""


# How the RPC process frames what a call ended in: this header, then `length` bytes (in the shared buffer): the
# serialized reply when `kind` is REPLY, else the outcome's details in UTF-8. `code` is a Refused's gRPC status code
# number, 0 for every other kind.
HEADER = struct.Struct("<BBI")  # kind, code, length
REPLY = 0
_KINDS: tuple[type[Exception], ...] = (UnknownWorker, StaleGradients, Stopped, Refused)  # kinds 1, 2, 3, 4


def encode(outcome: Exception) -> tuple[int, int, bytes]:
    """An outcome as (kind, code, details) for its header and the bytes after it."""
    kind = type(outcome)
    if kind not in _KINDS:
        raise TypeError(f"not a call outcome: {outcome!r}")
    code = outcome.code.value[0] if isinstance(outcome, Refused) else 0
    details = outcome.details if isinstance(outcome, CallFailed) else ""
    return _KINDS.index(kind) + 1, code, details.encode()


def decode(kind: int, code: int, details: bytes) -> Exception:
    """The outcome that (kind, code, details) of encode's stands for."""
    cls = _KINDS[kind - 1]
    if cls is Refused:
        return Refused(_STATUS_CODES[code], details.decode())
    if cls is Stopped:
        return Stopped()
    return cls(details.decode())
