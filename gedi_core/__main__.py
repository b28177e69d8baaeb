import sys

from gedi_core.cli import main

sys.exit(main())
