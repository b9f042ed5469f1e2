"""Flat parameter vectors: FlatLayout against the per-tensor wire format, and a model re-homed in flat vectors."""

from __future__ import annotations

import pytest
import torch

from asyncrl.common import tensors
from asyncrl.common.config import RunConfig
from asyncrl.common.models import build_model, flatten_gradients, flatten_parameters
from asyncrl.common.wire import model_spec
from asyncrl.v1 import parameter_server_pb2 as pb

LAYOUT = tensors.FlatLayout([pb.TensorSpec(name="w", shape=[2, 3]), pb.TensorSpec(name="empty", shape=[0]),
                             pb.TensorSpec(name="b", shape=[3])])
DTYPES = [(pb.DTYPE_FLOAT32, 0.0), (pb.DTYPE_FLOAT16, 1e-3), (pb.DTYPE_BFLOAT16, 1e-2)]


@pytest.mark.parametrize("dtype, rtol", DTYPES)
def test_encode_is_the_per_tensor_wire_format(dtype: int, rtol: float) -> None:
    """Byte for byte what tensors.encode gives each tensor, one message per layout entry."""
    flat = torch.linspace(-2, 3, LAYOUT.total)
    messages = LAYOUT.encode(flat, dtype)
    assert [(m.name, list(m.shape), m.dtype) for m in messages] == [("w", [2, 3], dtype), ("empty", [0], dtype),
                                                                    ("b", [3], dtype)]
    for message, part, name in zip(messages, LAYOUT.split(flat), LAYOUT.names):
        assert message.data == tensors.encode(name, part, dtype).data
    decoded = LAYOUT.decode(messages)
    assert decoded.dtype == torch.float32 and decoded.shape == (LAYOUT.total,)
    torch.testing.assert_close(decoded, flat, rtol=rtol, atol=rtol)


def test_decode_of_per_tensor_messages_in_mixed_dtypes() -> None:
    parts = [torch.arange(6.0).reshape(2, 3), torch.zeros(0), torch.tensor([0.5, -1.5, 2.0])]
    messages = [tensors.encode("w", parts[0], pb.DTYPE_FLOAT16), tensors.encode("empty", parts[1]),
                tensors.encode("b", parts[2], pb.DTYPE_BFLOAT16)]
    assert torch.equal(LAYOUT.decode(messages), torch.cat([p.reshape(-1) for p in parts]))


@pytest.mark.parametrize("change, match", [
    (lambda m: m.pop(), "got 2 tensors, the layout has 3"),
    (lambda m: setattr(m[0], "name", "v"), "got tensor 'v' where the layout has 'w'"),
    (lambda m: m[2].shape.__setitem__(0, 4), r"tensor 'b' has shape \[4\], the layout says \[3\]"),
    (lambda m: setattr(m[2], "data", m[2].data[:-1]), "tensor 'b': 11 bytes"),
    (lambda m: setattr(m[0], "dtype", 99), "unsupported dtype 99"),
])
def test_decode_names_what_does_not_match(change, match: str) -> None:
    messages = LAYOUT.encode(torch.ones(LAYOUT.total))
    change(messages)
    with pytest.raises(tensors.TensorFormatError, match=match):
        LAYOUT.decode(messages, "gradients")


def test_locate_names_the_tensor_holding_an_element() -> None:
    assert [LAYOUT.locate(i) for i in range(LAYOUT.total)] == ["w"] * 6 + ["b"] * 3
    with pytest.raises(IndexError):
        LAYOUT.locate(LAYOUT.total)


@pytest.mark.parametrize("config", [RunConfig(), RunConfig(env_id="ALE/Pong-v5", network="atari-lstm")],
                         ids=["mlp", "atari-lstm"])
def test_a_flattened_model_loads_and_accumulates_through_its_flat_vectors(config: RunConfig) -> None:
    """The worker's loop relies on both: copy_ into the weights vector changes the model, and backward() fills
    the gradient vector in place (the LSTM included, whose cell keeps references to its weight tensors)."""
    spec = model_spec(config)
    layout = tensors.FlatLayout(spec.layout)
    torch.manual_seed(0)
    model = build_model(spec)
    before = layout.flatten(model.parameters())
    weights, gradients = flatten_parameters(model), flatten_gradients(model)
    assert torch.equal(weights, before) and weights.shape == gradients.shape == (layout.total,)

    batch = 2
    observations = torch.randint(0, 255, (batch, *spec.observation_shape), dtype=torch.uint8) \
        if len(spec.observation_shape) == 3 else torch.randn(batch, *spec.observation_shape)

    def forward() -> torch.Tensor:
        outputs = model(observations, model.initial_state(batch)) if hasattr(model, "initial_state") \
            else model(observations)
        return sum(o.float().square().sum() for o in outputs if isinstance(o, torch.Tensor) and o.requires_grad)

    gradients.zero_()
    forward().backward()
    assert gradients.abs().sum() > 0
    assert torch.equal(gradients, layout.flatten(p.grad for p in model.parameters()))
    loss = forward().item()
    weights.copy_(torch.zeros(layout.total))
    assert forward().item() != loss and all(p.abs().sum() == 0 for p in model.parameters())
