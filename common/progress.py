"""Human-readable views of GetStatus: the one-line progress display and the `asyncrl status` report."""

from __future__ import annotations

from asyncrl.v1 import parameter_server_pb2 as pb


def epsilons_summary(status: pb.GetStatusResponse) -> str:
    """The env copies' current exploration rates, sorted ("" for methods without epsilon)."""
    epsilons = sorted(e for worker in status.workers if worker.alive for e in worker.epsilons)
    return " ".join(f"{e:.2f}" for e in epsilons)


def mean_return_text(status: pb.GetStatusResponse, width: int = 6, digits: int = 1) -> str:
    """The last-100 mean return, or "-" before any episode has ended (GetStatus reports 0 then)."""
    if status.episodes_completed == 0:
        return f"{'-':>{width}s}"
    return f"{status.mean_return_100:{width}.{digits}f}"


def progress_line(status: pb.GetStatusResponse) -> str:
    line = (
        f"T={status.global_frames:>9,d}  fps={status.frames_per_second:7.0f}  "
        f"updates/s={status.updates_per_second:6.1f}  mean_return_100={mean_return_text(status)}  "
        f"episodes={status.episodes_completed:,d}  workers={status.live_workers}"
    )
    if status.eval_episodes_completed:
        line += f"  eval_mean_return={status.eval_mean_return:6.1f}"
    if "losses/entropy" in status.metrics:
        line += f"  entropy={status.metrics['losses/entropy']:.3f}"
    epsilons = epsilons_summary(status)
    return f"{line}  epsilons=[{epsilons}]" if epsilons else line


def status_report(status: pb.GetStatusResponse) -> str:
    lines = [
        f"global frames (T)     {status.global_frames:,d}",
        f"version               {status.version:,d}",
        f"updates applied       {status.updates_applied:,d}",
        f"updates rejected      {status.updates_rejected:,d}",
        f"frames/s              {status.frames_per_second:,.0f}",
        f"updates/s             {status.updates_per_second:,.1f}",
        f"mean return (last 100) {mean_return_text(status, 0, 2)}",
        f"episodes completed    {status.episodes_completed:,d}",
        f"eval mean return      {status.eval_mean_return:.2f} (last {status.eval_window} of "
        f"{status.eval_episodes_completed:,d} evaluation episodes)" if status.eval_episodes_completed
        else "eval mean return      - (no evaluation episodes)",
        f"learning rate         {status.learning_rate:.3g}",
        f"training done         {'yes' if status.training_done else 'no'}",
        f"uptime                {status.uptime_seconds:,.0f}s",
        f"live workers          {status.live_workers} of {status.registered_workers}"
        + (f" (max {status.max_workers})" if status.max_workers else "")
        + (f"; the {len(status.workers)} most recently seen:" if len(status.workers) < status.registered_workers else ""),
    ]
    for worker in status.workers:
        state = ("alive" if worker.alive else "SILENT") + (
            f"  evaluation ({worker.episodes_reported:,d} episodes)" if worker.evaluation else "")
        epsilons = f"  epsilons={' '.join(f'{e:.2f}' for e in worker.epsilons)}" if worker.epsilons else ""
        lines.append(
            f"  worker {worker.worker_id:<4d} {worker.name:<24s} envs={worker.num_envs:<3d} "
            f"pushes={worker.pushes_applied:<8d} last seen {worker.seconds_since_last_seen:5.1f}s ago  {state}"
            f"{epsilons}"
        )
    return "\n".join(lines)
