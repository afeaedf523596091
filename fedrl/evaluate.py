"""``python -m fedrl.evaluate <model.pt>``: the command of :mod:`fedrl.rl.evaluate`, kept at its documented name."""

import sys

from fedrl.rl.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
