"""`python -m service [flags]` is `latentserve serve [flags]`."""

import sys

from service.cli import main

sys.exit(main())
