import sys

try:
    from gedi_core.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command's modules load: one line, as in the command
    print("gedi-core: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
