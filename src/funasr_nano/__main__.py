"""``python -m funasr_nano ...``: the same command line as ``funasr-nano``."""

import sys

from .cli.main import main

sys.exit(main())
