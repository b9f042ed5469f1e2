"""Environment construction: one place that knows how to make a gymnasium env (Atari with the paper's set-up)."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

ATARI_PREFIX = "ALE/"
ATARI_FRAME_SKIP = 4  # action repeat: each agent step is 4 emulator frames
ATARI_FRAME_STACK = 4
ATARI_SCREEN = 84
ATARI_NOOP_MAX = 30


class EnvSpecError(ValueError):
    """The env id is unknown or its spaces are not ones asyncrl's models handle."""


def is_atari(env_id: str) -> bool:
    return env_id.startswith(ATARI_PREFIX)


def make_env(env_id: str, repeat_action_probability: float = 0.0, render_mode: str | None = None) -> gym.Env:
    """Makes one environment copy; seeding happens at its first reset.

    An ALE game gets the paper's preprocessing: 84x84 grayscale, the max of the last two
    frames, action repeat 4, up to 30 no-op starts, a stack of the last 4 frames (uint8),
    and no sticky actions unless repeat_action_probability says otherwise (v5 defaults to 0.25).
    """
    try:
        if not is_atari(env_id):
            return gym.make(env_id, **({"render_mode": render_mode} if render_mode else {}))
        import ale_py

        gym.register_envs(ale_py)
        env = gym.make(env_id, frameskip=1, repeat_action_probability=repeat_action_probability,
                       full_action_space=False, render_mode=render_mode)
    except (gym.error.Error, ImportError) as error:  # unknown id, missing optional dependency, bad module
        raise EnvSpecError(f"cannot make environment {env_id!r}: {error}") from None
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=ATARI_NOOP_MAX, frame_skip=ATARI_FRAME_SKIP, screen_size=ATARI_SCREEN, grayscale_obs=True,
        terminal_on_life_loss=False, scale_obs=False,
    )
    return gym.wrappers.FrameStackObservation(env, ATARI_FRAME_STACK)


@dataclass(frozen=True)
class Actions:
    """An env's action space as the models see it: n discrete choices, or a box of real numbers.

    For a box, size is its dimension and low/high its bounds per dimension (possibly
    infinite), to which the actor clips the actions it gives the env.
    """

    size: int
    continuous: bool = False
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()


def env_dimensions(env_id: str) -> tuple[tuple[int, ...], Actions]:
    """The observation shape and the actions of env_id: Discrete, or a one-dimensional Box."""
    env = make_env(env_id)
    try:
        if not isinstance(env.observation_space, gym.spaces.Box):
            raise EnvSpecError(f"{env_id}: only Box observation spaces are supported, got {env.observation_space}")
        observation_shape = tuple(int(d) for d in env.observation_space.shape)
        space = env.action_space
        if isinstance(space, gym.spaces.Discrete):
            return observation_shape, Actions(int(space.n))
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            return observation_shape, Actions(int(space.shape[0]), continuous=True,
                                              low=tuple(map(float, space.low)), high=tuple(map(float, space.high)))
        raise EnvSpecError(f"{env_id}: only Discrete and one-dimensional Box action spaces are supported, "
                           f"got {space}")
    finally:
        env.close()
