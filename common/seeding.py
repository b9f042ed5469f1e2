"""Seeds derived from the run seed, so that every worker and env copy draws a distinct, reproducible stream."""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 32-bit seed determined by keys (e.g. run seed, worker id, env copy index)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint32)[0])
