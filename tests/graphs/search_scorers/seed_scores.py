"""Step scorers for the search tests: the fault server's steps name their seed."""

import re


def by_seed(question, steps):
    """Higher seeds score higher (the last step's)."""
    found = re.search(r"seed (\d+)", steps[-1])
    return int(found.group(1)) / 100 if found else 0.0


def broken(question, steps):
    return "high"
