"""A seeded random workload: CPU and memory utilisation that wander like a busy node's."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Workload:
    """Utilisations in [0, 1] following a mean-reverting random walk with occasional jumps.

    Jobs start and end on a real node, so utilisation mostly drifts and sometimes jumps;
    the same seed always gives the same sequence for the same steps.
    """

    seed: int
    cpu: float = 0.3
    memory: float = 0.2
    _rng: random.Random = field(init=False)
    _target: float = field(init=False, default=0.5)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def step(self, dt_s: float) -> None:
        """Advance by `dt_s` seconds of simulated time."""
        rng = self._rng
        if rng.random() < min(1.0, dt_s / 30.0):  # a job starts or ends about every 30 s
            self._target = rng.choice((0.05, 0.25, 0.5, 0.75, 0.95))
        pull = min(1.0, dt_s / 5.0)
        noise = rng.gauss(0.0, 0.05) * min(1.0, dt_s) ** 0.5
        self.cpu = min(1.0, max(0.0, self.cpu + (self._target - self.cpu) * pull + noise))
        self.memory = min(
            0.95, max(0.05, self.memory + (0.2 + 0.6 * self.cpu - self.memory) * pull)
        )
