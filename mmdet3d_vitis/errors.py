"""Errors the tools turn into a one-line message instead of a traceback."""


class UserInputError(Exception):
    """Bad input from the user: config, checkpoint, data or arguments."""
