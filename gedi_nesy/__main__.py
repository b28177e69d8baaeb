import sys

try:
    from gedi_nesy.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command's modules load: one line, as in the command
    print("gedi-nesy: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
