"""Knowledge distillation: a classifier also learns from a trained teacher's predictions.

The driver asks the teacher (another experiment's trained model, `train.distillation.teacher`)
for its logits on this experiment's training rows once, before the fit, and adds them as a
column; the loop mixes the loss on the labels with the distance to the teacher's softened
class probabilities. Only the training split is shown to the teacher: validation and test stay
as unseen by the student's training as before. The student is registered alone; predicting
needs no teacher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from lamina.config.compose import load_resolved_config
from lamina.config.paths import ExperimentPaths
from lamina.config.schema import DistillationConfig, ExperimentConfig
from lamina.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

TEACHER_LOGITS = "teacher_logits"  # the training rows' column the loop reads
_BATCH_ROWS = 512


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) between the class probabilities softened by `temperature`,
    times temperature^2 so that its gradients keep the scale of the labels' cross-entropy
    whatever the temperature (Hinton et al., 2015)."""
    return (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),
            F.log_softmax(teacher_logits / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )


def mixed_loss(
    label_loss: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    settings: DistillationConfig,
) -> torch.Tensor:
    soft = distillation_loss(student_logits, teacher_logits, settings.temperature)
    return (1.0 - settings.weight) * label_loss + settings.weight * soft


def with_teacher_logits(
    rows: pa.Table, config: ExperimentConfig, paths: ExperimentPaths, input_key: str
) -> pa.Table:
    """`rows` (this experiment's training features) plus the teacher's logits for each row."""
    from ray.data.extensions import ArrowTensorArray

    from lamina.models import load_trained_model

    teacher_paths = ExperimentPaths(config.train.distillation.teacher, paths.root)
    _check_teacher(config, paths, teacher_paths)
    _, teacher = load_trained_model(teacher_paths)
    inputs = np.concatenate([chunk.to_numpy() for chunk in rows.column(input_key).chunks])
    with torch.no_grad():
        logits = torch.cat(
            [
                teacher(torch.as_tensor(inputs[start : start + _BATCH_ROWS]))
                for start in range(0, len(inputs), _BATCH_ROWS)
            ]
        )
    return rows.append_column(TEACHER_LOGITS, ArrowTensorArray.from_numpy(logits.float().numpy()))


def _check_teacher(
    config: ExperimentConfig, paths: ExperimentPaths, teacher_paths: ExperimentPaths
) -> None:
    """Refuse a teacher that does not fit this experiment. It must be trained on the same
    split (a teacher trained on other rows could have seen this experiment's validation or
    test rows), read the same features and predict the same classes."""
    teacher = teacher_paths.name
    key = "train.distillation.teacher"
    if not teacher_paths.model_weights.is_file():
        raise DataError(
            f"{teacher_paths.model_dir}: {key} {teacher} has no trained model; "
            f"run `dvc repro train@{teacher}` first"
        )
    teacher_config = load_resolved_config(teacher_paths.trained_config)
    for section in ("data", "split", "preprocess"):
        if getattr(teacher_config, section) != getattr(config, section):
            raise DataError(
                f"{key} {teacher} was trained with another `{section}` section than "
                f"{config.name}; a teacher must share the student's split and preprocessing"
            )
    if teacher_paths.preprocessor.read_bytes() != paths.preprocessor.read_bytes():
        raise DataError(
            f"{teacher_paths.preprocessor} differs from {paths.preprocessor}: the teacher "
            f"{teacher} reads other features than {config.name}; run `dvc repro` to refit both"
        )
    if teacher_config.task != "classification":
        raise DataError(f"{key} {teacher} is not a classifier")
