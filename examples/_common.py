"""Shared command line of the examples: ``--quick`` for small sizes.

``--quick`` (or the environment variable ``CBP_EXAMPLES_QUICK=1``) runs an
example on small sizes in a few seconds; the tests run every example so.
"""

import argparse
import os


def parser(description):
    """An argument parser with the examples' common ``--quick`` flag."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("CBP_EXAMPLES_QUICK", "") not in ("", "0"),
        help="small sizes, a few seconds (also CBP_EXAMPLES_QUICK=1)",
    )
    return p
