"""Which slice of the flat parameter vector a shard owns, and the worker secrets every shard can check.

See docs/sharding.md. Every shard derives the same slice map from the run's layout and K,
so nothing about it is configured per shard but its index.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from asyncrl.common.config import ConfigError, ServerOptions
from asyncrl.common.tensors import FlatLayout, slice_layout
from asyncrl.v1 import parameter_server_pb2 as pb

MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class ShardMap:
    """K contiguous slices of a flat vector of `total` elements, balanced by bytes, and this process's index."""

    index: int
    count: int
    total: int
    addresses: tuple[str, ...] = ()  # host:port of every shard, shard 0 first (K > 1)

    @classmethod
    def of(cls, options: ServerOptions, total: int) -> ShardMap:
        if options.shards > total:
            raise ConfigError(f"--shards {options.shards}: the model has only {total} parameters")
        addresses = tuple(a.strip() for a in options.shard_addresses.split(",") if a.strip())
        return cls(options.shard_index, options.shards, total, addresses if options.shards > 1 else ())

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def is_coordinator(self) -> bool:
        """Shard 0 registers workers, keeps the episodes and ends the run."""
        return self.index == 0

    def bounds(self, index: int) -> tuple[int, int]:
        """(offset, length) of shard index's slice."""
        start, end = self.total * index // self.count, self.total * (index + 1) // self.count
        return start, end - start

    @property
    def offset(self) -> int:
        return self.bounds(self.index)[0]

    @property
    def length(self) -> int:
        return self.bounds(self.index)[1]

    def slice_layout(self) -> FlatLayout:
        """This shard's slice as the one tensor sliced requests and replies carry."""
        return slice_layout(self.length)

    def infos(self) -> list[pb.ShardInfo]:
        """The slice map for RegisterWorkerResponse.shards: shard 0's address is empty (the one registered with)."""
        return [pb.ShardInfo(address=self.addresses[i] if i > 0 else "", offset=offset, length=length)
                for i in range(self.count) for offset, length in [self.bounds(i)]]

    def describe(self) -> str:
        return f"shard {self.index} of {self.count}, elements [{self.offset}, {self.offset + self.length})"


def read_shard_key(path: str) -> bytes:
    """The secret bytes every shard derives worker secrets from (--shard-key-file)."""
    key = Path(path).read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"--shard-key-file {path} holds {len(key)} bytes: use at least {MIN_KEY_BYTES} random ones "
                          "(e.g. `openssl rand -hex 32 > FILE`)")
    return key


def derived_secret(key: bytes, worker_id: int) -> bytes:
    """Worker worker_id's secret: unpredictable without the key, and the same on every shard."""
    return hmac.new(key, f"asyncrl worker {worker_id}".encode(), hashlib.sha256).digest()
