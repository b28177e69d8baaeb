import sys

from gedi_nesy.cli import main

sys.exit(main())
