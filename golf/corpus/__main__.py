"""``python -m golf.corpus data {demo,fineweb} ...``: the ``golf data`` commands alone."""

import sys

from golf.corpus.cli import main

sys.exit(main())
