"""Each kind of data in one home: the preprocess stage, its features and everything after
training that differs by kind (`lamina.features.kind.DataKind`), looked up here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina.features.images import Images
from lamina.features.kind import DataKind
from lamina.features.series import Series
from lamina.features.text import Text

if TYPE_CHECKING:
    from lamina.config.schema import ExperimentConfig

DATA_KINDS: dict[str, DataKind] = {kind.name: kind for kind in (Images(), Text(), Series())}


def kind_for(config: ExperimentConfig) -> DataKind:
    """The kind of the experiment's data (`data.kind`)."""
    return DATA_KINDS[config.data.kind]
