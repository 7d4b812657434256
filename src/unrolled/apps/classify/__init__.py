"""Classifying whole sequences (many-to-one): accuracy, macro-F1 and the confusion matrix.

- :mod:`~unrolled.apps.classify.sequences`: the file layouts (NPZ, CSV, text), built-in datasets, the
  character vocabulary and the stratified split;
- :mod:`~unrolled.apps.classify.classifier`: the config, build / fit / evaluate / save / load.
"""

from unrolled.apps.classify.classifier import (
    APP,
    Classifier,
    ClassifyConfig,
    build,
    class_weights,
    evaluate,
    fit,
    format_confusion,
    load,
    read_for_prediction,
    save,
    train_and_evaluate,
)

__all__ = [
    "APP", "Classifier", "ClassifyConfig", "build", "class_weights", "evaluate", "fit", "format_confusion",
    "load", "read_for_prediction", "save", "train_and_evaluate",
]  # fmt: skip
