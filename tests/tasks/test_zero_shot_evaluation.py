"""`evaluate_zero_shot` from Python: `lmforge evaluate zero-shot` without the command line."""

from __future__ import annotations

import pytest

from lmforge.errors import LmforgeError
from lmforge.tasks.zero_shot_evaluation import ZeroShotOptions, evaluate_zero_shot


def test_evaluate_zero_shot_returns_metrics_and_rows_and_writes_nothing(
    tiny_pretrained, tmp_path
) -> None:
    dev = tmp_path / "dev.txt"
    dev.write_text("1 a gorgeous , witty film .\n0 an utter mess .\n1 fine\n")
    options = ZeroShotOptions(data=str(dev), label_words="0=negative,1=positive")
    result = evaluate_zero_shot(tiny_pretrained("gpt2-tiny"), options)
    assert result.files == () and list(tmp_path.iterdir()) == [dev]
    assert [row["label"] for row in result.rows] == ["1", "0", "1"]
    hits = sum(row["prediction"] == row["label"] for row in result.rows)
    assert result.metrics["accuracy"] == pytest.approx(100 * hits / 3)
    assert result.metrics["majority_accuracy"] == pytest.approx(200 / 3)
    assert result.metrics["label_words"] == {"0": "negative", "1": "positive"}


def test_options_are_checked_before_anything_is_read() -> None:
    with pytest.raises(LmforgeError, match="--shots 2 needs --train FILE"):
        ZeroShotOptions(data="missing.txt", shots=2)
