"""`python -m service ...` is `latentserve ...`."""

import sys

from service.cli import main

sys.exit(main())
