"""buildlm.tools: the tools a model may call while it generates, and the format of a call.

- ``calculator.py``: `calculate`, a safe exact calculator for ``+ - * / **`` and parentheses
  (its own tokenizer and recursive-descent parser, bounded; never ``eval``);
- ``calls.py``: the tool-call format (``<tool>calculator: 23*58</tool><result>1334</result>``),
  finding a call in generated text, running it, and cutting results out of training text.

It sits below every other package but the shared helpers: the decode loop (`buildlm.infer`)
runs the calls, and the bundled fine-tuning data (`buildlm.data`) writes them with the very
same functions, so a model is trained on exactly the results it will be shown.
"""

from buildlm.tools.calculator import CalculatorError, CalculatorLimits, calculate, evaluate
from buildlm.tools.calls import TOOLS, check_tools, final_answer, find_call

__all__ = [
    "TOOLS",
    "CalculatorError",
    "CalculatorLimits",
    "calculate",
    "check_tools",
    "evaluate",
    "final_answer",
    "find_call",
]
