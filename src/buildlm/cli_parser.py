"""The argument parser every ``buildlm`` command builds on: defaults in the help, both spellings.

Two things a user should not have to guess:

- **Defaults.** ``--help`` shows each option's default, ``(default: 0.8)``, unless the help text
  already says it. A switch that is off shows nothing. A repeatable option that starts empty
  shows ``(default: none)``. A ``None`` default means something different for each option (off,
  random, the model's own value), so the option's help must say it: ``(default: off)``.
- **Spelling.** Options are documented with dashes (``--max-new-tokens``), the usual style of
  command-line tools, but the dataclass-driven commands (``buildlm train``, ``buildlm finetune``)
  spell fields with underscores (``--train.max_steps``, ``--val_data``). So every command accepts
  both: `Parser` turns ``--max_new_tokens`` into ``--max-new-tokens`` before parsing, and
  `underscore_flags` does the opposite for the jsonargparse commands.

Only ``argparse`` here: a tokenizer command must not import torch.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

_FLAG = re.compile(r"--[A-Za-z][\w.-]*")


def _default_text(action: argparse.Action) -> str | None:
    """What ``(default: ...)`` says for ``action``, or ``None`` to say nothing.

    Compared by identity and type, not ``==``: ``0.0 == False``, and a penalty whose default is
    0.0 must still show it.
    """
    default = action.default
    if default is argparse.SUPPRESS or default is None or isinstance(default, bool):
        return None  # a switch, or a None whose meaning only the option's help can say
    if isinstance(default, (list, tuple)) and not default:
        return "none" if isinstance(action, argparse._AppendAction) else None
    return "%(default)s"


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` that shows defaults and accepts ``_`` for ``-`` in options.

    Subcommand parsers made with ``add_subparsers().add_parser`` are `Parser`s too.
    """

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        help_ = action.help or ""
        shown = _default_text(action)
        if (
            action.option_strings
            and help_ is not argparse.SUPPRESS
            and "default" not in help_.lower()
            and shown is not None
        ):
            action.help = f"{help_} (default: {shown})".strip()
        return action

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None):
        import sys

        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._dashed(args), namespace)

    def _dashed(self, args: list[str]) -> list[str]:
        """``--max_new_tokens=5`` -> ``--max-new-tokens=5`` where the dashed option exists."""
        known = {s for action in self._actions for s in action.option_strings}
        out = []
        for i, arg in enumerate(args):
            if arg == "--":  # everything after is a positional value
                return out + args[i:]
            name, eq, value = arg.partition("=")
            dashed = name.replace("_", "-")
            if _FLAG.fullmatch(name) and name not in known and dashed in known:
                arg = dashed + eq + value
            out.append(arg)
        return out


def underscore_flags(argv: list[str]) -> list[str]:
    """For the jsonargparse commands: ``--train.max-steps`` -> ``--train.max_steps``.

    Only option names change (the part before ``=``), never values; ``--`` ends the options.
    """
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        name, eq, value = arg.partition("=")
        if _FLAG.fullmatch(name):
            arg = "--" + name[2:].replace("-", "_") + eq + value
        out.append(arg)
    return out
