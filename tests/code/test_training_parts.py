"""Training helpers: early stopping decisions and state, augmentation that keeps shapes,
batches of texts of similar length, features read for the object store and shared out among
the workers, validation shared out among the ranks."""

import itertools
import os
import socket

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lamina.config.compose import compose_experiment
from lamina.errors import DataError
from lamina.models import build_model
from lamina.training.augment import random_affine
from lamina.training.driver import TrainingData, read_feature_files
from lamina.training.early_stopping import EarlyStopping
from lamina.training.loop import _validate, length_buckets
from lamina.training.scaffold import train_dataset_name
from lamina.training.tasks import supervised_task
from tests.conftest import CONF_DIR, TensorBatches


def test_early_stopping_waits_for_patience_then_stops():
    stopping = EarlyStopping(mode="min", patience=2)
    assert stopping.update(0, 1.0)
    assert stopping.update(1, 0.5)
    assert not stopping.update(2, 0.6)
    assert not stopping.should_stop
    assert not stopping.update(3, 0.5)  # equal is not an improvement
    assert stopping.should_stop
    assert (stopping.best_epoch, stopping.best_value) == (1, 0.5)


def test_early_stopping_state_round_trips():
    stopping = EarlyStopping(mode="max", patience=3)
    for epoch, value in enumerate([0.5, 0.7, 0.6]):
        stopping.update(epoch, value)
    restored = EarlyStopping(mode="max", patience=3)
    restored.load_state_dict(stopping.state_dict())
    assert restored == stopping


def test_random_affine_keeps_shape_and_is_seeded():
    images = torch.rand(4, 1, 28, 28)
    first = random_affine(images, 2.0, 10.0, torch.Generator().manual_seed(1))
    again = random_affine(images, 2.0, 10.0, torch.Generator().manual_seed(1))
    assert first.shape == images.shape
    assert torch.equal(first, again)
    assert not torch.equal(first, images)
    assert random_affine(images, 0.0, 0.0, torch.Generator()) is images


def _texts(lengths: list[int], max_length: int = 12) -> torch.Tensor:
    """Token-id rows, padding (0) at the end, row i's tokens all equal to i + 1."""
    rows = torch.zeros(len(lengths), max_length, dtype=torch.long)
    for row, length in enumerate(lengths):
        rows[row, :length] = row + 1
    return rows


def test_length_buckets_keep_every_row_once_and_group_similar_lengths():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 13, (40,), generator=generator).tolist()
    chunk = {"tokens": _texts(lengths), "label": torch.arange(40)}
    batches = list(length_buckets(chunk, "tokens", 8, torch.Generator().manual_seed(1)))

    assert [len(batch["label"]) for batch in batches] == [8] * 5
    labels = torch.cat([batch["label"] for batch in batches])
    assert sorted(labels.tolist()) == list(range(40))
    for batch in batches:  # rows stay whole: tokens and label of the same row
        assert torch.equal(batch["tokens"][:, 0], batch["label"] + 1)
    # Batches are consecutive runs of the rows sorted by length: no two overlap in length.
    spans = sorted(
        (min(lengths[i] for i in b["label"]), max(lengths[i] for i in b["label"])) for b in batches
    )
    assert all(high <= next_low for (_, high), (next_low, _) in itertools.pairwise(spans))
    # ... and they come in random order, not shortest first.
    firsts = [min(lengths[i] for i in b["label"]) for b in batches]
    assert firsts != sorted(firsts)


def test_length_buckets_cut_the_padding_a_batch_carries():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 61, (1024,), generator=generator).tolist()
    chunk = {"tokens": _texts(lengths, max_length=60), "label": torch.zeros(1024)}

    def padded_tokens(batches) -> int:  # what a model that trims to the longest text computes
        return sum(int((b["tokens"] != 0).sum(1).max()) * len(b["tokens"]) for b in batches)

    bucketed = padded_tokens(length_buckets(chunk, "tokens", 64, generator))
    random_batches = [{"tokens": rows} for rows in chunk["tokens"].split(64)]
    assert bucketed < 0.6 * padded_tokens(random_batches)
    assert bucketed < 1.1 * sum(lengths)


def test_length_buckets_order_follows_the_generator():
    chunk = {"tokens": _texts(list(range(1, 13)) * 4), "label": torch.arange(48)}

    def order(seed: int) -> list[int]:
        batches = length_buckets(chunk, "tokens", 4, torch.Generator().manual_seed(seed))
        return [int(b["label"][0]) for b in batches]

    assert order(3) == order(3)
    assert order(3) != order(4)


def test_feature_files_are_read_one_table_per_file_in_name_order(tmp_path):
    for index in (1, 0):
        pq.write_table(
            pa.table({"row": [2 * index, 2 * index + 1]}), tmp_path / f"part-{index:05d}.parquet"
        )
    (tmp_path / "notes.txt").write_text("not a feature file")

    tables = read_feature_files(tmp_path)

    assert [table["row"].to_pylist() for table in tables] == [[0, 1], [2, 3]]


def test_a_features_folder_without_parquet_files_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: no Parquet files"):
        read_feature_files(tmp_path)


def test_a_corrupt_feature_file_is_named_in_the_error(tmp_path):
    pq.write_table(pa.table({"row": [0, 1]}), tmp_path / "part-00000.parquet")
    (tmp_path / "part-00001.parquet").write_bytes(b"not parquet at all")

    with pytest.raises(DataError, match="part-00001.parquet: not a readable Parquet file"):
        read_feature_files(tmp_path)


def test_training_rows_held_in_memory_are_cut_per_worker_in_equal_strided_shares(local_ray):
    val = local_ray.data.from_items([{"row": -1}])
    data = TrainingData(val, train_rows=pa.table({"row": list(range(9))}))

    datasets, split_by_ray = data.for_workers(2)

    assert split_by_ray == [] and datasets["val"] is val
    rows = {
        rank: [item["row"] for item in datasets[train_dataset_name(rank)].take_all()]
        for rank in (0, 1)
    }
    # Every worker the same number of rows (so the same number of steps), from the whole split.
    assert rows == {0: [0, 2, 4, 6], 1: [1, 3, 5, 7]}
    assert set(datasets) == {"val", train_dataset_name(0), train_dataset_name(1)}


def test_training_rows_streamed_from_parquet_are_left_to_ray_trains_split(local_ray):
    val = local_ray.data.from_items([{"row": -1}])
    stream = local_ray.data.from_items([{"row": row} for row in range(9)])

    datasets, split_by_ray = TrainingData(val, train_stream=stream).for_workers(2)

    assert datasets == {"train": stream, "val": val} and split_by_ray == ["train"]


def _validation_setup():
    """The CNN preset (batch norm, dropout) with fixed weights and 513 digits: two batches of
    256 and a last batch of one row, which leaves the second rank nothing to score."""
    config = compose_experiment("cnn-mnist", CONF_DIR)
    torch.manual_seed(0)
    model = build_model(config)
    model.train()
    model(torch.randn(64, 1, 28, 28))  # batch norm's running statistics move off their start
    generator = torch.Generator().manual_seed(1)
    data = TensorBatches(
        {
            "image": torch.randn(513, 1, 28, 28, generator=generator),
            "label": torch.randint(0, 10, (513,), generator=generator),
        }
    )
    return config, model, data


def _validate_as_rank(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        config, model, data = _validation_setup()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        if rank == 1:  # its batch norm statistics moved with a last batch of its own
            model(torch.randn(64, 1, 28, 28) + 1.0)
        results[rank] = _validate(ddp, data, supervised_task(config), config, torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_each_score_half_of_validation_and_agree_with_rank_0_scoring_all():
    import torch.multiprocessing as mp

    config, model, data = _validation_setup()
    alone = _validate(model, data, supervised_task(config), config, torch.device("cpu"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_validate_as_rank, args=(port, results), nprocs=2)
        by_rank = dict(results)

    assert set(alone) == {"val/loss", "val/accuracy"}
    for rank in (0, 1):
        assert by_rank[rank]["val/accuracy"] == alone["val/accuracy"]
        assert by_rank[rank]["val/loss"] == pytest.approx(alone["val/loss"], rel=1e-5)
    assert by_rank[0] == by_rank[1]  # bit for bit: every rank takes the same decisions
