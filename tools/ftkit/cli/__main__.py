import sys

from ftkit.cli.app import main

sys.exit(main())
