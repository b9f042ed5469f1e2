"""Tensors on the wire: torch tensors <-> asyncrl.v1.Tensor (raw little-endian C-order bytes plus dtype and shape)."""

from __future__ import annotations

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


def encode_all(named: Iterable[tuple[str, torch.Tensor]], dtype: int = pb.DTYPE_FLOAT32) -> list[pb.Tensor]:
    return [encode(name, tensor, dtype) for name, tensor in named]


def decode(message: pb.Tensor) -> torch.Tensor:
    """Decodes one tensor to float32, checking that its byte length matches dtype and shape."""
    torch_dtype = TORCH_DTYPES.get(message.dtype)
    if torch_dtype is None:
        raise TensorFormatError(f"tensor {message.name!r}: unsupported dtype {message.dtype}")
    if any(d < 0 for d in message.shape):
        raise TensorFormatError(f"tensor {message.name!r}: negative dimension in shape {list(message.shape)}")
    count = 1
    for dim in message.shape:
        count *= dim
    expected = count * torch_dtype.itemsize
    if len(message.data) != expected:
        raise TensorFormatError(
            f"tensor {message.name!r}: {len(message.data)} bytes, but shape {list(message.shape)} of "
            f"{pb.Dtype.Name(message.dtype)} needs {expected}"
        )
    if not message.data:
        return torch.zeros(tuple(message.shape), dtype=torch.float32)
    raw = torch.frombuffer(bytearray(message.data), dtype=torch_dtype)
    return raw.reshape(tuple(message.shape)).to(torch.float32)


def decode_layout(
    messages: Sequence[pb.Tensor], layout: Sequence[pb.TensorSpec], what: str = "tensors"
) -> list[torch.Tensor]:
    """Decodes a full parameter-shaped list, checking count, names and shapes against the layout."""
    if len(messages) != len(layout):
        raise TensorFormatError(f"{what}: got {len(messages)} tensors, the layout has {len(layout)}")
    decoded = []
    for message, spec in zip(messages, layout):
        if message.name != spec.name:
            raise TensorFormatError(f"{what}: got tensor {message.name!r} where the layout has {spec.name!r}")
        if list(message.shape) != list(spec.shape):
            raise TensorFormatError(
                f"{what}: tensor {spec.name!r} has shape {list(message.shape)}, the layout says {list(spec.shape)}"
            )
        decoded.append(decode(message))
    return decoded


def layout_of(named: Iterable[tuple[str, torch.Tensor]]) -> list[pb.TensorSpec]:
    """The wire layout of a model's parameters, in the order they travel."""
    return [pb.TensorSpec(name=name, shape=list(t.shape), dtype=pb.DTYPE_FLOAT32) for name, t in named]
