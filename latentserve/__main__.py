import sys

from latentserve.cli import main

sys.exit(main())
