"""Translation: an encoder–decoder with attention trained on sentence pairs, scored with BLEU.

- :mod:`~unrolled.apps.translate.dates`: the built-in task, human-readable dates to ISO dates;
- :mod:`~unrolled.apps.translate.translator`: the config, build / fit / evaluate / save / load, the
  attention plot. The model itself is :mod:`unrolled.seq2seq`.
"""

from unrolled.apps.translate.translator import (
    APP,
    TranslateConfig,
    Translator,
    build,
    evaluate,
    fit,
    group_references,
    is_translator,
    load,
    plot_attention,
    plot_sentence_attention,
    resume_translator,
    save,
    split_pairs,
    translator_meta,
)

__all__ = [
    "APP", "TranslateConfig", "Translator", "build", "evaluate", "fit", "group_references", "is_translator",
    "load", "plot_attention", "plot_sentence_attention", "resume_translator", "save", "split_pairs",
    "translator_meta",
]  # fmt: skip
