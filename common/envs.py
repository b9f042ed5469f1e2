"""Environment construction: one place that knows how to make a gymnasium env and read its sizes."""

from __future__ import annotations

import gymnasium as gym


class EnvSpecError(ValueError):
    """The env id is unknown or its spaces are not ones asyncrl's models handle."""


def make_env(env_id: str) -> gym.Env:
    """Makes one environment copy; seeding happens at its first reset."""
    try:
        return gym.make(env_id)
    except gym.error.Error as error:
        raise EnvSpecError(f"cannot make environment {env_id!r}: {error}") from None


def env_dimensions(env_id: str) -> tuple[tuple[int, ...], int]:
    """The observation shape and the number of discrete actions of env_id."""
    env = make_env(env_id)
    try:
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise EnvSpecError(f"{env_id}: only discrete action spaces are supported, got {env.action_space}")
        if not isinstance(env.observation_space, gym.spaces.Box):
            raise EnvSpecError(f"{env_id}: only Box observation spaces are supported, got {env.observation_space}")
        return tuple(int(d) for d in env.observation_space.shape), int(env.action_space.n)
    finally:
        env.close()
