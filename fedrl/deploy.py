"""``python -m fedrl.deploy``: the command of :mod:`fedrl.tools.deploy`, kept at its documented name."""

import sys

from fedrl.tools.deploy import main

if __name__ == "__main__":
    sys.exit(main())
