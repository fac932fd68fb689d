"""``python -m inference_pio <command>``: the same commands as ``pio``."""

from .cli import main

raise SystemExit(main())
