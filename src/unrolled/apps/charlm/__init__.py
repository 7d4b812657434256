"""Character-level language models: text in, a model that predicts (and writes) the next character.

- :mod:`~unrolled.apps.charlm.text`: the character vocabulary and UTF-8 files streamed to ids;
- :mod:`~unrolled.apps.charlm.lm`: the run's config, build / fit / evaluate / load, sampling text;
- :mod:`~unrolled.apps.charlm.sampling`: the next-token distribution and streaming generation;
- :mod:`~unrolled.apps.charlm.demo`: the corpus (Python's own source) and model of ``unrolled demo``.
"""

from unrolled.apps.charlm.lm import (
    APP,
    FIXED_ON_RESUME,
    LN2,
    CharLMConfig,
    Corpus,
    RunSummary,
    SampleConfig,
    bits,
    build,
    default_prime,
    evaluate,
    fit,
    load,
    load_corpus,
    memory_bound,
    model_path,
    report,
    resume_config,
    sample_text,
)

__all__ = [
    "APP", "FIXED_ON_RESUME", "LN2", "CharLMConfig", "Corpus", "RunSummary", "SampleConfig", "bits", "build",
    "default_prime", "evaluate", "fit", "load", "load_corpus", "memory_bound", "model_path", "report",
    "resume_config", "sample_text",
]  # fmt: skip
