"""``python tests/tiny_cli.py ARGS``: the real ``dinotrack`` CLI with the tiny test backbone registered.

Lets tests drive the CLI in a real subprocess (signals, exit status) with
``--model tiny``, which only exists inside the test suite.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoints import register_tiny_backbone  # noqa: E402

from dinotrack.cli import main  # noqa: E402

if __name__ == "__main__":
    register_tiny_backbone()
    main()
