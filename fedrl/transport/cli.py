"""``fedrl-superlink`` and ``fedrl-supernode``: Flower's own commands with fedrl's patches applied.

    fedrl-superlink <flower-superlink arguments>
    fedrl-supernode [--poll-max-ms 5] [--stock-clientapp] <flower-supernode arguments>
    python -m fedrl.transport.cli superlink|supernode ...

Each starts by reporting every patch it applied or skipped (with the reason). On a Flower
release the patches are not written for, the stock command runs unchanged, unless a
setting that needs a patch was given explicitly (``--poll-max-ms``): that stops with an error.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fedrl.config import ConfigError
from fedrl.transport import compat
from fedrl.transport.supernode import DEFAULT_POLL_MAX_MS, InNodeClientApp

log = logging.getLogger("fedrl")

SUPERLINK_PATCHES = ["superlink-middleware", "superlink-auth-cache", "superlink-held-pulls"]
SUPERNODE_PATCHES = ["supernode-polls", "object-pulls", "supernode-signatures"]


def _report(prog: str, report: dict[str, str]) -> None:
    print(f"{prog}: Flower patches: {compat.describe(report)}", file=sys.stderr, flush=True)


def superlink(argv: list[str] | None = None) -> None:
    """``fedrl-superlink``: Flower's SuperLink, idle middleware skipped, pulls held; all arguments go to it."""
    from flwr.superlink.cli import flower_superlink

    _report("fedrl-superlink", compat.apply(SUPERLINK_PATCHES))
    sys.argv = ["flower-superlink", *(sys.argv[1:] if argv is None else argv)]
    flower_superlink()


def parse_supernode(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """fedrl-supernode's own arguments, and the rest for flower-supernode."""
    parser = argparse.ArgumentParser(prog="fedrl-supernode",
                                     description="Flower's flower-supernode with adaptive polls and the ClientApp "
                                                 "run inside the node.",
                                     epilog="Every other argument goes to flower-supernode unchanged.")
    parser.add_argument("--poll-max-ms", type=float, default=None,
                        help=f"longest wait between polls while a run is active (default {DEFAULT_POLL_MAX_MS})")
    parser.add_argument("--stock-clientapp", action="store_true",
                        help="keep Flower's one-process-per-message ClientApp (only the polls change)")
    args, rest = parser.parse_known_args(argv)
    if args.poll_max_ms is not None and not args.poll_max_ms > 0:
        parser.error(f"--poll-max-ms must be > 0, got {args.poll_max_ms}")
    if not args.stock_clientapp and any(a == "--isolation" or a.startswith("--isolation=") for a in rest):
        parser.error("--isolation is chosen by fedrl-supernode (process: it runs the ClientApp itself); "
                     "add --stock-clientapp to keep Flower's subprocess isolation")
    return args, rest


def supernode(argv: list[str] | None = None) -> None:
    """``fedrl-supernode``: Flower's SuperNode with adaptive polls and the ClientApp run in-process."""
    args, flower_args = parse_supernode(sys.argv[1:] if argv is None else argv)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s fedrl-supernode: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    executor = None if args.stock_clientapp else InNodeClientApp()
    poll_max_ms = DEFAULT_POLL_MAX_MS if args.poll_max_ms is None else args.poll_max_ms
    report = compat.apply(SUPERNODE_PATCHES,
                          {"supernode-polls": {"max_s": poll_max_ms / 1000, "executor": executor}})
    _report("fedrl-supernode", report)
    if args.poll_max_ms is not None:
        try:
            compat.require("supernode-polls", "--poll-max-ms", args.poll_max_ms, "leave it out")
        except ConfigError as exc:
            raise SystemExit(f"fedrl-supernode: {exc}") from exc
    if executor is not None and report["supernode-polls"] == "applied":
        # Nothing else may take the node's ClientApp tasks: no SuperExec is started.
        flower_args += ["--isolation", "process"]
    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()


def main(argv: list[str] | None = None) -> None:
    """``python -m fedrl.transport.cli superlink|supernode ARGS``."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"superlink": superlink, "supernode": supernode}
    if not argv or argv[0] not in commands:
        raise SystemExit(f"usage: python -m fedrl.transport.cli {{{'|'.join(commands)}}} ARGS "
                         f"(got {argv[0] if argv else 'nothing'!r})")
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
