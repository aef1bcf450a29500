import sys

from e4e.cli import main

sys.exit(main())
