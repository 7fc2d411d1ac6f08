import sys

from studio.cli import main

# Guarded: a process started with multiprocessing's "spawn" imports this module again as `__mp_main__`.
if __name__ == "__main__":
    sys.exit(main())
