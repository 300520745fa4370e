"""An experiment cell: one method configuration evaluated on one dataset and setting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fsarbench.results import cell_id

__all__ = ["Cell"]


@dataclass(frozen=True)
class Cell:
    """Method ``method`` (registered name plus ``hparams`` overrides) on ``dataset`` at
    ``way``-way ``shot``-shot on ``track`` (``frozen`` or ``finetune``) under ``protocol``.
    ``tags`` say which tables and figures use the cell."""

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
    protocol: str = "seed"

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
