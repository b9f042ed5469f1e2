"""What the bearer token and TLS cost: push latency and updates/s with and without them, as ratios from one run.

    .venv/bin/python benchmarks/security_cost.py [--env-id CartPole-v1] [--calls 300] [--seconds 10]

For each setting (plaintext; bearer token; token + TLS; token + mutual TLS), a fresh `asyncrl
server` on 127.0.0.1 with certificates made by trustme for this run, then:

1. PushGradients round trips (fp32, weights in the reply) through the worker's own
   GrpcConnection and RPC process: p50 and p99 over --calls calls, after a warm-up;
2. one `asyncrl worker --envs 1` process against a fresh server of the same setting:
   updates/s from GetStatus over --seconds, after --warmup.

Ratios are each setting's figure over plaintext's, measured in the same run. Progress goes to
stderr, the table (markdown) to stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import trustme

from bench import NO_END, Child, note, percentile, timed  # benchmarks/ is on sys.path
from asyncrl.common.config import ClientSecurity, WorkerOptions
from asyncrl.common.security import client_channel
from asyncrl.v1 import parameter_server_pb2 as pb
from asyncrl.v1 import parameter_server_pb2_grpc as pb_grpc
from asyncrl.worker.client import GrpcConnection, Update
from asyncrl.worker.rpc_process import ProcessCalls

SETTINGS = ("plaintext", "token", "token + TLS", "token + mutual TLS")


def certificates(directory: Path) -> dict[str, str]:
    """A token file, a CA with a server certificate for 127.0.0.1, and a client CA with one client certificate."""
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server, client = server_ca.issue_cert("127.0.0.1"), client_ca.issue_cert("bench.asyncrl")
    files = {"token": directory / "token", "ca": directory / "ca.pem", "client_ca": directory / "client-ca.pem",
             "cert": directory / "server.pem", "key": directory / "server.key",
             "client_cert": directory / "client.pem", "client_key": directory / "client.key"}
    files["token"].write_text("bench-token\n")
    server_ca.cert_pem.write_to_path(str(files["ca"]))
    client_ca.cert_pem.write_to_path(str(files["client_ca"]))
    for issued, chain, key in ((server, "cert", "key"), (client, "client_cert", "client_key")):
        files[chain].write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(files[key]))
    return {name: str(path) for name, path in files.items()}


def flags(setting: str, files: dict[str, str]) -> tuple[list[str], ClientSecurity]:
    """The server's flags and the clients' settings for one setting."""
    server: list[str] = []
    client: dict[str, str] = {}
    if setting != "plaintext":
        server += ["--auth-token-file", files["token"]]
        client["auth_token_file"] = files["token"]
    if "TLS" in setting:
        server += ["--tls-cert", files["cert"], "--tls-key", files["key"]]
        client["tls_ca"] = files["ca"]
    if "mutual" in setting:
        server += ["--tls-client-ca", files["client_ca"]]
        client.update(tls_client_cert=files["client_cert"], tls_client_key=files["client_key"])
    return server, ClientSecurity(**client)


class SecureServer(Child):
    """`asyncrl server` on a free port of 127.0.0.1 with a setting's flags, and a status stub that speaks it."""

    def __init__(self, directory: Path, env_id: str, server_flags: list[str], security: ClientSecurity) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        port_file = directory / "server.port"
        super().__init__(["server", "--env-id", env_id, "--port", "0", "--port-file", str(port_file),
                          "--checkpoint-dir", str(directory / "checkpoints"), "--checkpoint-interval", "0",
                          "--target-return", "none", "--max-frames", NO_END, "--log-level", "WARNING",
                          *server_flags], directory / "server.log")
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start serving within 60s")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"
        self.channel = client_channel(self.address, security)
        self.stub = pb_grpc.ParameterServerServiceStub(self.channel)

    def status(self) -> pb.GetStatusResponse:
        return self.stub.GetStatus(pb.GetStatusRequest(), timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        self.channel.close()
        super().stop(timeout)


def push_latency(server: SecureServer, security: ClientSecurity, calls: int) -> list[float]:
    """PushGradients round trips of zero gradients, weights in the reply, as the worker's connection makes them."""
    options = WorkerOptions(server=server.address, **vars(security))
    connection = GrpcConnection("float32", ProcessCalls(options, threading.Event()))
    try:
        registered = connection.register("bench-security", 1, pb.ALGORITHM_UNSPECIFIED)
        gradients = torch.zeros(connection.layout.total)
        state = {"versions": (0,)}

        def push() -> None:
            update = Update(state["versions"], 5, gradients)
            state["versions"] = connection.start_push(registered.worker_id, update).result().versions

        return timed(push, calls, max(10, calls // 10))
    finally:
        connection.close()


def updates_per_second(directory: Path, env_id: str, server_flags: list[str], security: ClientSecurity,
                       warmup: float, seconds: float) -> float:
    server = SecureServer(directory, env_id, server_flags, security)
    worker = Child(["worker", "--server", server.address, "--envs", "1", "--log-level", "WARNING",
                    *[arg for name, value in vars(security).items() if value
                      for arg in ("--" + name.replace("_", "-"), value)]], directory / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while server.status().updates_applied == 0:
            worker.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the worker applied no update within 60s")
            time.sleep(0.1)
        time.sleep(warmup)
        start, started = server.status().updates_applied, time.monotonic()
        time.sleep(seconds)
        return (server.status().updates_applied - start) / (time.monotonic() - started)
    finally:
        worker.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--calls", type=int, default=300, help="timed pushes per setting")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of training before the window")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of the updates/s window")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="asyncrl-security-") as temporary:
        root = Path(temporary)
        files = certificates(root)
        for index, setting in enumerate(SETTINGS):
            server_flags, security = flags(setting, files)
            note(f"{setting}: push latency")
            server = SecureServer(root / f"latency-{index}", args.env_id, server_flags, security)
            try:
                pushes = push_latency(server, security, args.calls)
            finally:
                server.stop()
            note(f"{setting}: updates/s")
            rate = updates_per_second(root / f"rate-{index}", args.env_id, server_flags, security, args.warmup,
                                      args.seconds)
            results[setting] = {"p50": percentile(pushes, 50), "p99": percentile(pushes, 99), "rate": rate}
    base = results["plaintext"]
    print(f"{args.env_id}, A3C, 1 worker x 1 env copy; push: fp32 with the weights in the reply, {args.calls} calls\n")
    print("| setting | push p50 / p99 (ms) | ratio p50 / p99 | updates/s | ratio |")
    print("|---|---|---|---|---|")
    for setting, result in results.items():
        print(f"| {setting} | {1e3 * result['p50']:.2f} / {1e3 * result['p99']:.2f} | "
              f"{result['p50'] / base['p50']:.2f} / {result['p99'] / base['p99']:.2f} | {result['rate']:,.0f} | "
              f"{result['rate'] / base['rate']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
