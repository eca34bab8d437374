import sys

from station.cli.app import main

sys.exit(main())
