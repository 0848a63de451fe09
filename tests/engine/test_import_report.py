"""What `mindscope import` prints reads as English: the preprocessing in words, counts agreeing."""

from pathlib import Path

from mindscope.engine.importer import ImportReport


def report(input_range: str, layers: int) -> list[str]:
    return ImportReport(
        Path("my_store/shapes/1"), (28, 28, 1), ["a", "b"], "logits", input_range, "the default", layers, False
    ).lines()


def test_the_summary_says_what_the_model_is_given_and_counts_agree():
    lines = report("0-1", 1)
    assert lines[1] == "input: 28x28, 1 channel; pixels are given to the model as 0-1 (the default)"
    assert lines[3].startswith("1 layer with a spatial output (activations); no initial weights")
    assert report("0-255", 3)[1].endswith("pixels are given to the model as 0-255 (the default)")
    assert report("mean-std", 3)[1].endswith("as (0-1 value - mean) / std per channel (the default)")
    assert report("-1-1", 3)[3].startswith("3 layers with a spatial output")
