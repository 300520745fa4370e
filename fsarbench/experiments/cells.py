"""An experiment cell: one method configuration evaluated on one dataset and setting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fsarbench.io import stable_hash
from fsarbench.results import cell_id

__all__ = ["Cell", "TrainKey"]


@dataclass(frozen=True)
class TrainKey:
    """What identifies one trained model; several cells (shots, ways) share it."""

    method: str
    hparams: tuple[tuple[str, Any], ...]
    dataset: str
    track: str
    train_seed: int
    recipe_hash: str
    features_hash: str

    @property
    def slug(self) -> str:
        return f"{self.method}__{self.dataset}__{self.track}__s{self.train_seed}__" + stable_hash(
            [self.hparams, self.recipe_hash, self.features_hash], 10
        )


@dataclass(frozen=True)
class Cell:
    """Method ``method`` (registered name plus ``hparams`` overrides) on ``dataset`` at
    ``way``-way ``shot``-shot. ``tags`` say which tables and figures use the cell."""

    method: str
    dataset: str
    way: int = 5
    shot: int = 1
    hparams: tuple[tuple[str, Any], ...] = ()
    track: str = "frozen"
    seed: int = 0
    train_seed: int = 0
    label: str = ""
    tags: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @property
    def hparams_dict(self) -> dict[str, Any]:
        return dict(self.hparams)

    @property
    def tags_dict(self) -> dict[str, Any]:
        return dict(self.tags)

    @property
    def name(self) -> str:
        """The name results carry: the method, plus its overrides when it has any."""
        if not self.hparams:
            return self.method
        return self.method + "[" + ",".join(f"{k}={v}" for k, v in self.hparams) + "]"

    def record_id(self, config_hash: str) -> str:
        return cell_id(
            self.name, self.dataset, self.track, self.way, self.shot, self.seed, config_hash
        )
