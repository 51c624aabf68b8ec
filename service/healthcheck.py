"""Container health check without curl: `python -m service.healthcheck` exits 0 when /readyz is 200.

The port comes from LATENTSERVE_PORT (as for the server); the check always asks the
loopback address, which the server answers whether it binds 127.0.0.1 or 0.0.0.0.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else "/readyz"
    url = f"http://127.0.0.1:{os.environ.get('LATENTSERVE_PORT', '8000')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            print(f"{url}: {response.status}")
            return 0
    except urllib.error.HTTPError as e:  # 503 while loading or with a refused model
        print(f"{url}: {e.code} {e.read().decode(errors='replace')[:500]}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as e:
        print(f"{url}: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
