"""The wire contract: buf lint, generated code current with the .proto, tensors encoded as documented."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asyncrl.common import tensors
from asyncrl.v1 import parameter_server_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


def buf_binary() -> str:
    candidates = [os.environ.get("ASYNCRL_BUF", ""), str(ROOT / ".tools/node_modules/.bin/buf"), shutil.which("buf") or ""]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("buf not found: run `make lint` (installs @bufbuild/buf into .tools/) or set ASYNCRL_BUF")


def test_proto_passes_buf_lint_standard():
    """`buf lint` with the STANDARD rules (buf.yaml) reports nothing."""
    result = subprocess.run([buf_binary(), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_current(tmp_path: Path):
    """Regenerating from proto/ gives byte-identical files to the committed ones (run `make proto` if not)."""
    subprocess.run([sys.executable, str(ROOT / "proto/generate.py"), "--out", str(tmp_path)], check=True)
    fresh = sorted(tmp_path.glob("asyncrl/v1/*_pb2*"))
    assert fresh, "generate.py wrote nothing"
    for path in fresh:
        committed = ROOT / "proto" / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is out of date: run `make proto`"


def test_float32_bytes_are_little_endian_c_order():
    """Element [i][j] of a [2, 3] float32 tensor sits at byte 4 * (3i + j), little-endian."""
    message = tensors.encode("w", torch.arange(6, dtype=torch.float32).reshape(2, 3) + 0.5)
    assert list(message.shape) == [2, 3] and message.dtype == pb.DTYPE_FLOAT32
    assert message.data == np.array([0.5, 1.5, 2.5, 3.5, 4.5, 5.5], dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("dtype", "numpy_dtype", "tolerance"),
    [(pb.DTYPE_FLOAT32, "<f4", 0), (pb.DTYPE_FLOAT16, "<f2", 1e-3), (pb.DTYPE_BFLOAT16, None, 1e-2)],
)
def test_round_trip_in_every_dtype(dtype: int, numpy_dtype: str | None, tolerance: float):
    """encode then decode returns the tensor within the dtype's precision, with 4 or 2 bytes an element."""
    original = torch.linspace(-3, 3, 24).reshape(2, 3, 4)
    message = tensors.encode("t", original, dtype)
    assert len(message.data) == original.numel() * (4 if dtype == pb.DTYPE_FLOAT32 else 2)
    if numpy_dtype is not None:
        assert message.data == original.numpy().astype(numpy_dtype).tobytes()
    else:  # bfloat16 is the upper half of the float32 bits (round to nearest even)
        halves = np.frombuffer(message.data, dtype="<u2").astype(np.uint32) << 16
        assert np.allclose(halves.view("<f4"), original.numpy().ravel(), rtol=tolerance)
    decoded = tensors.decode(message)
    assert decoded.dtype == torch.float32 and decoded.shape == original.shape
    assert torch.allclose(decoded, original, rtol=tolerance, atol=tolerance)


def test_decode_refuses_wrong_byte_length_and_dtype():
    """A byte count that does not match shape x dtype, or an unknown dtype, is a TensorFormatError."""
    message = tensors.encode("t", torch.ones(3))
    with pytest.raises(tensors.TensorFormatError, match="12 bytes|needs 12"):
        tensors.decode(pb.Tensor(name="t", dtype=pb.DTYPE_FLOAT32, shape=[4], data=message.data))
    with pytest.raises(tensors.TensorFormatError, match="unsupported dtype"):
        tensors.decode(pb.Tensor(name="t", dtype=pb.DTYPE_UNSPECIFIED, shape=[3], data=message.data))
