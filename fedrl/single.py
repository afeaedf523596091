"""``python -m fedrl.single``: the command of :mod:`fedrl.rl.single`, kept at its documented name."""

import sys

from fedrl.rl.single import main

if __name__ == "__main__":
    sys.exit(main())
