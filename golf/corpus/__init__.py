"""Token data for the pipeline: where shards and tokenizers come from.

* :mod:`golf.corpus.demo`: the embedded demo corpus, built offline from the Python standard
  library's text (``golf data demo``);
* :mod:`golf.corpus.fineweb`: the challenge's published FineWeb cache, fetched from Hugging Face
  (``golf data fineweb``);
* :mod:`golf.corpus.cli`: the ``golf data`` command.

The names most callers need are importable from here.
"""

from golf.corpus.demo import DEMO_DATASET, DEMO_TOKENIZER, CorpusError, DataPaths, DemoData, build_demo, demo_paths
from golf.corpus.fineweb import FINEWEB_VARIANTS, FetchError, FinewebVariant, fetch_fineweb

__all__ = [
    "DEMO_DATASET",
    "DEMO_TOKENIZER",
    "FINEWEB_VARIANTS",
    "CorpusError",
    "DataPaths",
    "DemoData",
    "FetchError",
    "FinewebVariant",
    "build_demo",
    "demo_paths",
    "fetch_fineweb",
]
