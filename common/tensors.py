"""Tensors on the wire: torch tensors <-> asyncrl.v1.Tensor (raw little-endian C-order bytes plus dtype and shape)."""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Iterable, Sequence

import torch

from asyncrl.v1 import parameter_server_pb2 as pb

TORCH_DTYPES: dict[int, torch.dtype] = {
    pb.DTYPE_FLOAT32: torch.float32,
    pb.DTYPE_FLOAT16: torch.float16,
    pb.DTYPE_BFLOAT16: torch.bfloat16,
}
WIRE_DTYPES: dict[str, int] = {"float32": pb.DTYPE_FLOAT32, "float16": pb.DTYPE_FLOAT16, "bfloat16": pb.DTYPE_BFLOAT16}
if sys.byteorder != "little":  # the wire is little-endian and tensors are copied byte for byte
    raise ImportError("asyncrl.common.tensors supports little-endian hosts only")


class TensorFormatError(ValueError):
    """A wire tensor does not match what was expected; the message says how."""


def encode(name: str, tensor: torch.Tensor, dtype: int = pb.DTYPE_FLOAT32) -> pb.Tensor:
    """Encodes one tensor, converting it to the wire dtype first."""
    converted = tensor.detach().to(TORCH_DTYPES[dtype]).contiguous()
    # bfloat16 has no numpy dtype: view its bits as int16, which keeps the bytes unchanged.
    array = converted.view(torch.int16).numpy() if dtype == pb.DTYPE_BFLOAT16 else converted.numpy()
    return pb.Tensor(name=name, dtype=dtype, shape=list(converted.shape), data=array.tobytes())


def _check_length(message: pb.Tensor) -> torch.dtype:
    """The message's torch dtype, once its dtype is supported and its byte length matches dtype and shape."""
    torch_dtype = TORCH_DTYPES.get(message.dtype)
    if torch_dtype is None:
        raise TensorFormatError(f"tensor {message.name!r}: unsupported dtype {message.dtype}")
    if any(d < 0 for d in message.shape):
        raise TensorFormatError(f"tensor {message.name!r}: negative dimension in shape {list(message.shape)}")
    expected = math.prod(message.shape) * torch_dtype.itemsize
    if len(message.data) != expected:
        raise TensorFormatError(
            f"tensor {message.name!r}: {len(message.data)} bytes, but shape {list(message.shape)} of "
            f"{pb.Dtype.Name(message.dtype)} needs {expected}"
        )
    return torch_dtype


def decode(message: pb.Tensor) -> torch.Tensor:
    """Decodes one tensor to float32, checking that its byte length matches dtype and shape."""
    torch_dtype = _check_length(message)
    if not message.data:
        return torch.zeros(tuple(message.shape), dtype=torch.float32)
    raw = torch.frombuffer(bytearray(message.data), dtype=torch_dtype)
    return raw.reshape(tuple(message.shape)).to(torch.float32)


class FlatLayout:
    """A model's parameters as one flat float32 vector: each tensor's name, shape and place in it, in wire order.

    The server keeps its parameters, optimizer statistics and every snapshot as such a vector
    and the worker keeps its model's parameters and gradients in one, so that an update, a
    load or an encode is a few whole-vector operations rather than a few per tensor (a
    CartPole MLP has 8 tensors of a few hundred elements: per-tensor overhead dominated).
    On the wire nothing changes: one Tensor message per layout entry, in order.
    """

    def __init__(self, specs: Iterable[pb.TensorSpec]) -> None:
        self.specs = tuple(specs)
        self.names = tuple(spec.name for spec in self.specs)
        self.shapes = tuple(tuple(spec.shape) for spec in self.specs)
        self.sizes = tuple(math.prod(shape) for shape in self.shapes)
        self.total = sum(self.sizes)

    @classmethod
    def of(cls, named: Iterable[tuple[str, torch.Tensor]]) -> FlatLayout:
        """The layout of named tensors (a model's named_parameters()), each travelling as float32."""
        return cls(pb.TensorSpec(name=name, shape=list(t.shape), dtype=pb.DTYPE_FLOAT32) for name, t in named)

    def flatten(self, tensors: Iterable[torch.Tensor]) -> torch.Tensor:
        """A new flat float32 vector holding the tensors back to back."""
        return torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of the flat vector, one per layout entry, in their shapes."""
        return [part.view(shape) for part, shape in zip(flat.split(self.sizes), self.shapes)]

    def encode(self, flat: torch.Tensor, dtype: int = pb.DTYPE_FLOAT32) -> list[pb.Tensor]:
        """The flat vector on the wire: converted to the wire dtype once, then one Tensor per layout entry.

        Each entry's bytes are copied straight from the converted vector: a tobytes() of the whole
        and a slice of that per entry would copy every byte twice (a Tensor copies its data again).
        """
        converted = flat.detach().to(TORCH_DTYPES[dtype]).contiguous()
        array = (converted.view(torch.int16) if dtype == pb.DTYPE_BFLOAT16 else converted).numpy()
        messages, offset = [], 0
        for spec, size in zip(self.specs, self.sizes):
            end = offset + size
            messages.append(pb.Tensor(name=spec.name, dtype=dtype, shape=spec.shape, data=array[offset:end].tobytes()))
            offset = end
        return messages

    def decode(self, messages: Sequence[pb.Tensor], what: str = "tensors") -> torch.Tensor:
        """A full parameter-shaped list of wire tensors as one new flat float32 vector.

        Checks count, names, shapes, dtypes and byte lengths against the layout; raises
        TensorFormatError naming the first tensor that does not match.
        """
        if len(messages) != len(self.specs):
            raise TensorFormatError(f"{what}: got {len(messages)} tensors, the layout has {len(self.specs)}")
        dtypes = set()
        for message, spec, shape, size in zip(messages, self.specs, self.shapes, self.sizes):
            if message.name != spec.name:
                raise TensorFormatError(f"{what}: got tensor {message.name!r} where the layout has {spec.name!r}")
            if tuple(message.shape) != shape:
                raise TensorFormatError(
                    f"{what}: tensor {spec.name!r} has shape {list(message.shape)}, the layout says {list(shape)}"
                )
            torch_dtype = TORCH_DTYPES.get(message.dtype)
            if torch_dtype is None or len(message.data) != size * torch_dtype.itemsize:
                _check_length(message)  # raises, saying what is wrong (the shape is the layout's, so the length)
            dtypes.add(message.dtype)
        if len(dtypes) > 1:  # legal but unusual: each tensor in its own dtype
            return torch.cat([decode(message).reshape(-1) for message in messages])
        torch_dtype = TORCH_DTYPES[dtypes.pop()] if dtypes else torch.float32
        raw = bytearray().join(message.data for message in messages)  # one copy, writable for torch.frombuffer
        if not raw:
            return torch.zeros(self.total, dtype=torch.float32)
        return torch.frombuffer(raw, dtype=torch_dtype).to(torch.float32)

    def locate(self, index: int) -> str:
        """The name of the tensor that holds element `index` of the flat vector."""
        for name, end in zip(self.names, itertools.accumulate(self.sizes)):
            if index < end:
                return name
        raise IndexError(f"element {index} is past the layout's {self.total}")


SLICE = "slice"  # the name of the one tensor a sliced request or reply carries (docs/sharding.md)


def slice_layout(length: int) -> FlatLayout:
    """A shard's slice of the flat vector as the one tensor sliced requests and replies carry."""
    return FlatLayout([pb.TensorSpec(name=SLICE, shape=[length])])


def flat_norm(flat: torch.Tensor) -> float:
    """The L2 norm gradient clipping divides by, in one place for both sides of a sharded server.

    A server of one process takes the norm of the gradient it decoded; with shards, each holds a
    slice, so the worker sends this norm of the whole gradient as the server would decode it
    (for float32 the gradient itself), and clipping is the same as with one process.
    """
    return float(torch.linalg.vector_norm(flat))
