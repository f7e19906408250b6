import sys

from clipwise.cli import main

sys.exit(main())
