"""The exceptions a user can cause, so the CLI can tell them from bugs.

Library code raises the ordinary built-ins a Python user expects (``ValueError``,
``FileNotFoundError``); their message always names the bad value and how to fix it. The CLI
turns these into one line on stderr and a non-zero exit; anything else is a bug and keeps its
traceback.
"""

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    UnicodeDecodeError,
    KeyError,
    FloatingPointError,  # a run whose loss diverged (buildlm.train.trainer.NonFiniteLossError)
)
