"""User-facing errors: the CLI prints these as one line, without a traceback."""


class FPTError(Exception):
    """Something the user gave (a name, a file, a config value) is wrong; the message says what and how to fix it."""
