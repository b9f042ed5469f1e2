"""A tiny cliff walk, registered as "cliff_env:CliffWalk-v0", whose Q* and SARSA values are computed exactly.

    row 0:  .  .  .  .
    row 1:  .  .  .  .
    row 2:  S  C  C  G        S start, C cliff (reward -10, terminal), G goal (terminal)

Every move costs -1 (stepping into the cliff -10). Moves off the grid stay put. Episodes
start in a uniformly random free cell (exploring starts), so every state is visited.
Observations are one-hot over the 12 cells, so a linear Q network is a table.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ROWS, COLUMNS = 3, 4
CLIFF = {(2, 1), (2, 2)}
GOAL = (2, 3)
MOVES = [(-1, 0), (0, 1), (1, 0), (0, -1)]  # up, right, down, left
STEP_REWARD, CLIFF_REWARD = -1.0, -10.0
FREE = [(r, c) for r in range(ROWS) for c in range(COLUMNS) if (r, c) not in CLIFF and (r, c) != GOAL]


def transition(cell: tuple[int, int], action: int) -> tuple[tuple[int, int], float, bool]:
    """(next cell, reward, terminal) for a move: deterministic."""
    row = min(max(cell[0] + MOVES[action][0], 0), ROWS - 1)
    column = min(max(cell[1] + MOVES[action][1], 0), COLUMNS - 1)
    if (row, column) in CLIFF:
        return (row, column), CLIFF_REWARD, True
    return (row, column), STEP_REWARD, (row, column) == GOAL


def index(cell: tuple[int, int]) -> int:
    return cell[0] * COLUMNS + cell[1]


class CliffWalk(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, shape=(ROWS * COLUMNS,), dtype=np.float32)
    action_space = gym.spaces.Discrete(4)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cell = FREE[self.np_random.integers(len(FREE))]
        return self._observation(), {}

    def step(self, action: int):
        self.cell, reward, terminal = transition(self.cell, int(action))
        return self._observation(), reward, terminal, False, {}

    def _observation(self) -> np.ndarray:
        observation = np.zeros(ROWS * COLUMNS, dtype=np.float32)
        observation[index(self.cell)] = 1.0
        return observation


def exact_q_values(gamma: float, epsilon: float, on_policy: bool, sweeps: int = 2000) -> np.ndarray:
    """Q [cells, actions] for free cells: Q* (on_policy=False), or the fixed point SARSA reaches under
    epsilon-greedy behaviour (on_policy=True): Q(s,a) = r + gamma * E_{a' ~ eps-greedy(Q)} Q(s', a')."""
    q = np.zeros((ROWS * COLUMNS, 4))
    for _ in range(sweeps):
        new = np.zeros_like(q)
        for cell in FREE:
            for action in range(4):
                successor, reward, terminal = transition(cell, action)
                if terminal:
                    new[index(cell), action] = reward
                    continue
                values = q[index(successor)]
                if on_policy:
                    bootstrap = (1 - epsilon) * values.max() + epsilon * values.mean()
                else:
                    bootstrap = values.max()
                new[index(cell), action] = reward + gamma * bootstrap
        q = new
    return q


gym.register("CliffWalk-v0", entry_point=CliffWalk, max_episode_steps=50)
