"""The one exception type kgzsl raises for bad input: its message names the input and what to do."""


class KgzslError(ValueError):
    """Bad input or a missing resource. The CLI prints the message on one line and exits 2."""
