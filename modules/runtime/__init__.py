"""Runtime boundary: the one execution surface every generation goes through."""
