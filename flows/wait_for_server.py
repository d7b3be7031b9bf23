"""Wait until a Prefect server answers /health: `python -m flows.wait_for_server [API_URL] [TIMEOUT_S]`.

`prefect server start --background` returns before the server listens (its database migrations take
10-30 s on two busy cores), so `make server` waits here and `make deploy` right after it works.
"""

from __future__ import annotations

import sys
import time
import urllib.request


def wait(api_url: str = "http://127.0.0.1:4200/api", timeout_s: float = 120) -> float:
    """Seconds waited until ``api_url``/health answered 200; SystemExit after ``timeout_s``."""
    start = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"no Prefect server answered at {api_url} within {timeout_s:g} s")
        time.sleep(1)


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:4200/api"
    waited = wait(url, float(sys.argv[2]) if len(sys.argv) > 2 else 120)
    print(f"Prefect server ready at {url} ({waited:.0f} s)")
