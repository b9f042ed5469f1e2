"""Message size limits: a model of over 10M float32 parameters (40 MB) is pulled and pushed in one message each."""

from __future__ import annotations

import math

from conftest import pull, register

from asyncrl.v1 import parameter_server_pb2 as pb


def test_ten_million_parameter_model_fits_default_limits(server_factory):
    """With default limits, a >10M-parameter model's weights come back and its gradients are applied."""
    server = server_factory("--network", "mlp", "--hidden-sizes", "3400,3000", "--target-return", "none")
    reply = register(server.stub)
    layout = reply.config.model.layout
    parameters = sum(math.prod(spec.shape) for spec in layout)
    assert parameters > 10_000_000
    assert reply.config.max_message_bytes >= 4 * parameters

    weights = pull(server.stub, reply)
    assert sum(len(t.data) for t in weights.parameters) == 4 * parameters

    gradients = [pb.Tensor(name=s.name, dtype=pb.DTYPE_FLOAT32, shape=s.shape, data=bytes(4 * math.prod(s.shape)))
                 for s in layout]
    pushed = server.stub.PushGradients(
        pb.PushGradientsRequest(worker_id=reply.worker_id, base_version=0, sequence_number=1, frames=5,
                                gradients=gradients, worker_secret=reply.worker_secret),
        timeout=60,
    )
    assert pushed.version == 1 and pushed.global_frames == 5
