"""`python -m asr` is the `asr` command."""

from asr.cli import main

raise SystemExit(main())
