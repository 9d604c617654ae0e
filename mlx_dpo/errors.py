"""The one exception type for mistakes a user can fix (bad file, bad option, missing model)."""


class MlxDpoError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback.

    The message names what is wrong and where (file, line, field) and, where known, how to fix it.
    """
