import sys

from tagmatch.cli import main

sys.exit(main())
