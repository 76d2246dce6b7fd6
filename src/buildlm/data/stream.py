"""What every resumable batch stream shares: batch ``k`` is a pure function of ``(seed, k)``.

A stream that can compute any batch from its number alone needs no other state to resume: its
``state_dict`` is ``{"seed", "step"}``, and a restored stream continues with exactly the
batches an uninterrupted one would have produced. Subclasses say how batch ``k`` is made
(:meth:`SeededBatchStream.batch_at`); iteration and saving live here once.
"""

from __future__ import annotations

from typing import Any


class SeededBatchStream:
    """An endless iterator over ``batch_at(0), batch_at(1), ...`` that saves and restores its place.

    Subclasses set ``self.seed`` and ``self.step = 0`` and define ``batch_at(step)``.
    """

    seed: int
    step: int

    def batch_at(self, step: int) -> Any:
        raise NotImplementedError

    def __iter__(self) -> SeededBatchStream:
        return self

    def __next__(self) -> Any:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"the saved data stream used seed {int(state['seed'])}, this one uses {self.seed}; "
                "resume with the same seed to continue exactly"
            )
        self.step = int(state["step"])
