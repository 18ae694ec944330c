"""Knowledge distillation: the loss against a teacher's softened predictions, and the teacher's
logits added to the training rows only when the teacher fits the student (same split, same
features)."""

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from ray.data.extensions import ArrowTensorArray

from lamina.config.compose import compose_experiment, dump_config, with_overrides
from lamina.config.paths import ExperimentPaths
from lamina.errors import DataError
from lamina.features.text import Vocabulary
from lamina.models import build_model
from lamina.training.distillation import (
    TEACHER_LOGITS,
    distillation_loss,
    mixed_loss,
    with_teacher_logits,
)
from tests.conftest import CONF_DIR


def test_the_loss_is_zero_for_the_teachers_own_predictions_and_scaled_by_t_squared():
    teacher = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    assert distillation_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)

    student = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    temperature = 3.0
    p = F.softmax(teacher / temperature, dim=1)
    q = F.softmax(student / temperature, dim=1)
    by_hand = (p * (p / q).log()).sum(dim=1).mean() * temperature**2
    assert distillation_loss(student, teacher, temperature).item() == pytest.approx(by_hand.item())


def test_the_mix_weighs_labels_against_the_teacher():
    settings = compose_experiment("transformer-sentiment", CONF_DIR).train.distillation
    student, teacher = torch.randn(4, 2), torch.randn(4, 2)
    label_loss = torch.tensor(0.7)
    soft = distillation_loss(student, teacher, settings.temperature)
    expected = (1 - settings.weight) * label_loss + settings.weight * soft
    assert mixed_loss(label_loss, student, teacher, settings).item() == pytest.approx(
        expected.item()
    )


TOKENS = ["<pad>", "<unk>", "good", "bad", "film", "dull"]


@pytest.fixture
def student_and_teacher(tmp_path):
    """transformer-sentiment as the student and a small trained-looking lstm-sentiment as its
    teacher, both as their stages leave them under outputs/."""
    student = compose_experiment("transformer-sentiment", CONF_DIR)
    teacher = with_overrides(
        compose_experiment("lstm-sentiment", CONF_DIR),
        {"model.embedding_dim": 8, "model.hidden_size": 8, "model.pretrained_embeddings": "none"},
    )
    vocabulary = Vocabulary(TOKENS, lowercase=True, max_length=6, fitted_on_rows=4)
    for config in (student, teacher):
        paths = ExperimentPaths(config.name, tmp_path)
        paths.model_dir.mkdir(parents=True)
        vocabulary.save(paths.preprocessor)
    teacher_paths = ExperimentPaths(teacher.name, tmp_path)
    teacher_paths.trained_config.write_text(dump_config(teacher))
    torch.manual_seed(0)
    teacher_model = build_model(teacher, len(TOKENS)).eval()
    torch.save(teacher_model.state_dict(), teacher_paths.model_weights)
    rows = pa.table(
        {
            "tokens": ArrowTensorArray.from_numpy(
                np.array([[2, 4, 0, 0, 0, 0], [3, 5, 4, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
            ),
            "label": [1, 0, 0],
        }
    )
    return student, teacher, teacher_model, rows, tmp_path


def test_each_training_row_gets_the_teachers_logits(student_and_teacher):
    student, _, teacher_model, rows, root = student_and_teacher
    table = with_teacher_logits(rows, student, ExperimentPaths(student.name, root), "tokens")
    assert table.column_names == ["tokens", "label", TEACHER_LOGITS]
    logits = np.concatenate([chunk.to_numpy() for chunk in table.column(TEACHER_LOGITS).chunks])
    with torch.no_grad():
        expected = teacher_model(torch.as_tensor(rows.column("tokens").chunks[0].to_numpy()))
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_a_teacher_trained_on_another_split_is_refused(student_and_teacher):
    student, teacher, _, rows, root = student_and_teacher
    other_split = with_overrides(teacher, {"split.seed": 5})
    ExperimentPaths(teacher.name, root).trained_config.write_text(dump_config(other_split))
    with pytest.raises(DataError, match="another `split` section than transformer-sentiment"):
        with_teacher_logits(rows, student, ExperimentPaths(student.name, root), "tokens")


def test_a_teacher_with_other_features_is_refused(student_and_teacher):
    student, teacher, _, rows, root = student_and_teacher
    refitted = Vocabulary([*TOKENS, "great"], lowercase=True, max_length=6, fitted_on_rows=5)
    refitted.save(ExperimentPaths(teacher.name, root).preprocessor)
    with pytest.raises(DataError, match="reads other features than transformer-sentiment"):
        with_teacher_logits(rows, student, ExperimentPaths(student.name, root), "tokens")


def test_a_teacher_not_trained_yet_names_the_stage_to_run(student_and_teacher):
    student, teacher, _, rows, root = student_and_teacher
    ExperimentPaths(teacher.name, root).model_weights.unlink()
    with pytest.raises(DataError, match=r"run `dvc repro train@lstm-sentiment` first"):
        with_teacher_logits(rows, student, ExperimentPaths(student.name, root), "tokens")
