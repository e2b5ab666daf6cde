"""``python -m edgetune.device_agents serve|local ...``: the agent commands alone (no other CLI modules)."""

from __future__ import annotations

import logging
import sys


def main() -> None:
    from edgetune.device_agents._cli import agent_app
    from edgetune.errors import EdgetuneError

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        agent_app(prog_name="python -m edgetune.device_agents")
    except EdgetuneError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
