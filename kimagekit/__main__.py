import sys

from kimagekit.cli import main

sys.exit(main())
