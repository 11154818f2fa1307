"""Which device an installed backend would use, asked in a process of its own: ``vaebench backends --devices``.

A process of its own because importing a framework is what answers the
question, and Keras' engines cannot share one process (the first import of
Keras fixes its backend); and because a framework whose import hangs or
crashes must cost this command one line, not the whole listing.
"""

from __future__ import annotations

import subprocess
import sys

IMPORT_TIMEOUT = 300  # seconds; a framework's first import can compile caches, but not for longer than this

_ASK = (
    "import sys; from vaebench.plugin import registry; from vaebench.errors import VaebenchError\n"
    "try:\n    env = registry.load(sys.argv[1])[0]().environment()\n"
    "    print(f\"device     {env.get('device')}: {env.get('device_name')}\")\n"
    "except VaebenchError as exc:\n    print(f'unusable   {exc}')"
)


def device_line(name: str) -> str:
    """One line for the listing: ``device     <kind>: <name>``, or ``unusable   <why>``."""
    try:
        proc = subprocess.run([sys.executable, "-c", _ASK, name], capture_output=True, text=True, timeout=IMPORT_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "unusable   importing the framework took over 5 minutes"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return f"unusable   the import failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}"
    return lines[-1]
