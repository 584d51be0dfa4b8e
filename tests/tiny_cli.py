"""``python tests/tiny_cli.py ARGS``: the real ``dinotrack`` CLI with the tiny test backbone registered.

Lets tests drive the CLI in a real subprocess (signals, exit status) with
``--model tiny``, which only exists inside the test suite.
"""

from dinotrack.cli import main
from dinotrack.testing import register_tiny_backbone

if __name__ == "__main__":
    register_tiny_backbone()
    main()
