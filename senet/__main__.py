import sys

from senet.cli.main import main

sys.exit(main())
