"""``python -m buildlm`` (what ``torchrun -m buildlm`` runs) is the same as the ``buildlm`` command."""

from buildlm.cli import main

if __name__ == "__main__":
    main()
