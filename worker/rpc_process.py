"""The worker's RPCs, made by a child process, so that gRPC's Python client does not share the rollout loop's GIL.

gRPC's Python client runs a few hundred microseconds of Python per call. Run in the worker's
process, on a push thread, that code took turns at the GIL with the rollout loop, and every
torch call in the loop releases the GIL and had to win it back: on CartPole a push cost the
loop 0.4 ms of a 0.65 ms update. Here the loop only copies a serialized request into shared
memory and later copies the serialized reply out of it; the child (`python -m
asyncrl.worker.rpc_process`, which does not import torch) makes the call with ChannelCalls'
deadlines and retries, and answers the reply or the call's outcome (asyncrl.worker.outcomes:
its kind, gRPC status code and details, each its own field), which the worker raises as the
same exception.

The messages travel through one shared buffer (a memfd, or a temporary file where there is
none), as large as the largest message allowed. Through pipes, 64 KB at a time, the 2.7 MB
messages of a Pong update cost the loop 5.7 ms more than in-process (ratio 0.73); through
the buffer, 2.1 ms (0.94). The child's stdin and stdout carry only small frames: a request
is its method name and its length; a reply, outcomes.HEADER (the kind: a reply or an
outcome's; a refusal's status code; the length of the message, or of an outcome's details, in
the buffer). So there is one call at a time.

The child dies with the worker (PR_SET_PDEATHSIG), ends when its stdin closes, and stops
retrying on SIGTERM or SIGINT (a Ctrl-C reaches it too; the worker forwards a SIGTERM when
its own stop event is set during a wait). It runs at nice 10, so that on a busy machine it yields the core to the
rollout loop rather than preempting it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import mmap
import os
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import BinaryIO

from asyncrl.common.cli import configure_logging  # also keeps large messages' buffers on the heap
from asyncrl.common.config import WorkerOptions
from asyncrl.worker import outcomes
from asyncrl.worker.calls import ChannelCalls
from asyncrl.worker.outcomes import RpcProcessDied, Stopped

_REQUEST = struct.Struct("<HI")  # method name length, message length
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class ProcessCalls:
    """Calls (asyncrl.worker.calls.Calls) made by a child process, one at a time.

    start() returns as soon as the request is handed over, so a push travels while the
    rollout loop works; the next call may start once the returned function has been called.
    """

    def __init__(self, options: WorkerOptions, stop: threading.Event, seed: int = 0) -> None:
        self.stop = stop
        shared = _shared_file(int(options.max_message_mb * 2**20))
        # The child inherits the signal mask: it starts with SIGTERM and SIGINT blocked, so that one arriving
        # while it imports (a worker stopped at once, a Ctrl-C) waits for its handlers instead of killing it.
        unmasked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            self._buffer = mmap.mmap(shared, 0)
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, json.dumps(dataclasses.asdict(options)), str(seed),
                 str(os.getpid()), str(shared)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(shared,),
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, unmasked)
            os.close(shared)
        self._requests: BinaryIO = self.process.stdin
        self._replies: BinaryIO = self.process.stdout
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._replies, selectors.EVENT_READ)
        self._interrupted = False
        self._waiting = False

    def call(self, method: str, request: bytes) -> bytes:
        return self.start(method, request)()

    def start(self, method: str, request: bytes) -> Callable[[], bytes]:
        if self._waiting:
            raise RuntimeError("ProcessCalls makes one call at a time: take the last one's reply first")
        if len(request) > len(self._buffer):
            raise ValueError(f"a {len(request):,} B request is over the {len(self._buffer):,} B message limit")
        self._buffer[:len(request)] = request
        name = method.encode()
        try:
            self._requests.write(_REQUEST.pack(len(name), len(request)) + name)
            self._requests.flush()
        except BrokenPipeError:
            raise self._died() from None
        self._waiting = True
        return self._receive

    def _receive(self) -> bytes:
        """Waits for the reply; forwards a stop to the child (once) while waiting, so its retries end."""
        while not self._selector.select(timeout=0.1):
            if self.stop.is_set() and not self._interrupted:
                self._interrupted = True
                self.process.send_signal(signal.SIGTERM)
            if self.process.poll() is not None:
                raise self._died()
        header = self._replies.read(outcomes.HEADER.size)
        if len(header) < outcomes.HEADER.size:
            raise self._died()
        self._waiting = False
        kind, code, length = outcomes.HEADER.unpack(header)
        payload = self._buffer[:length]
        if kind == outcomes.REPLY:
            return payload
        raise outcomes.decode(kind, code, payload)

    def _died(self) -> RpcProcessDied:
        return RpcProcessDied(f"the worker's RPC process exited (status {self.process.wait()}); see its log above")

    def close(self) -> None:
        """Ends the child: it exits when its stdin closes; one still waiting on a call after a second is killed."""
        try:
            self._requests.close()
        except BrokenPipeError:
            pass
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._selector.close()
        self._replies.close()
        self._buffer.close()


def _shared_file(size: int) -> int:
    """A file descriptor of `size` bytes for both processes to map; sparse, so only what is written takes memory."""
    if hasattr(os, "memfd_create"):
        shared = os.memfd_create("asyncrl-rpc")  # close-on-exec, but for the child it is passed to
    else:
        with tempfile.TemporaryFile() as temporary:
            shared = os.dup(temporary.fileno())
    os.ftruncate(shared, size)
    return shared


def _serve(calls: ChannelCalls, buffer: mmap.mmap, requests: BinaryIO, replies: BinaryIO) -> None:
    """Answers requests until stdin closes."""
    while header := requests.read(_REQUEST.size):
        if len(header) < _REQUEST.size:
            return
        name_length, length = _REQUEST.unpack(header)
        method = requests.read(name_length).decode()
        request = buffer[:length]
        try:
            kind, code, payload = outcomes.REPLY, 0, calls.call(method, request)
        except (outcomes.CallFailed, Stopped) as outcome:
            kind, code, payload = outcomes.encode(outcome)
        buffer[:len(payload)] = payload
        replies.write(outcomes.HEADER.pack(kind, code, len(payload)))
        replies.flush()


def _die_with(parent: int) -> None:
    """Asks Linux to kill this process when the worker dies (even by SIGKILL); exits if it already has."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(0)


def main(argv: list[str]) -> None:
    options_json, seed, parent, shared = argv
    _die_with(int(parent))
    # Woken for each call, this child otherwise preempted the rollout loop about once every two
    # CartPole updates on 2 busy cores, and the loop ran 8% slower (measured).
    os.nice(10)
    options = WorkerOptions(**json.loads(options_json))
    configure_logging(options.log_level)
    stop = threading.Event()
    for signum in _STOP_SIGNALS:
        signal.signal(signum, lambda _signum, _frame: stop.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by the worker until now
    # The replies go to a private copy of stdout; anything else printed goes to stderr, not into the pipe.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    buffer = mmap.mmap(int(shared), 0)
    calls = ChannelCalls(options, stop, int(seed))
    try:
        _serve(calls, buffer, sys.stdin.buffer, replies)
    except BrokenPipeError:
        pass  # the worker is gone
    finally:
        calls.close()


if __name__ == "__main__":
    main(sys.argv[1:])
