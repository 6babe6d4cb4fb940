import sys

from srdd.cli import main

sys.exit(main())
