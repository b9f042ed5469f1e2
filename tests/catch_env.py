"""Catch (as in bsuite) drawn in pixels, registered as "catch_env:Catch-v0": a pixel task the Atari net learns in minutes.

A ball starts in a random column of the top row of a 10 x 5 grid and falls one row per
step; the agent moves a paddle along the bottom row (left, stay, right). When the ball
reaches the bottom the episode ends with +1 if the paddle is under it, else -1. Each
cell is drawn 4 x 4 pixels, so an observation is one 40 x 20 uint8 frame (ball and
paddle 255 on 0), in the [C, H, W] layout of the Atari frames: the env family and the
network are the Atari ones, which is what a learning test on it guards. A uniform random
policy scores about -0.6; a perfect one +1.

"catch_env:ContinuousCatch-v0" is the same game with a Box action in [-1, 1], the paddle's move
rounded to -1, 0 or +1: a pixel task for the Atari net with the Gaussian policy's heads.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ROWS, COLUMNS, CELL = 10, 5, 4


class Catch(gym.Env):
    observation_space = gym.spaces.Box(0, 255, shape=(1, ROWS * CELL, COLUMNS * CELL), dtype=np.uint8)
    action_space = gym.spaces.Discrete(3)  # left, stay, right

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.ball_row, self.ball_column = 0, int(self.np_random.integers(COLUMNS))
        self.paddle = COLUMNS // 2
        return self._frame(), {}

    def step(self, action: int):
        self.paddle = min(max(self.paddle + int(action) - 1, 0), COLUMNS - 1)
        self.ball_row += 1
        landed = self.ball_row == ROWS - 1
        reward = (1.0 if self.paddle == self.ball_column else -1.0) if landed else 0.0
        return self._frame(), reward, landed, False, {}

    def _frame(self) -> np.ndarray:
        frame = np.zeros(self.observation_space.shape, dtype=np.uint8)
        for row, column in ((self.ball_row, self.ball_column), (ROWS - 1, self.paddle)):
            frame[0, row * CELL:(row + 1) * CELL, column * CELL:(column + 1) * CELL] = 255
        return frame


class ContinuousCatch(Catch):
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)  # the paddle's move, rounded

    def step(self, action: np.ndarray):
        return super().step(int(np.rint(np.clip(action[0], -1.0, 1.0))) + 1)


gym.register("Catch-v0", entry_point=Catch)
gym.register("ContinuousCatch-v0", entry_point=ContinuousCatch)
