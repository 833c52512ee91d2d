"""``python -m ibs_study`` runs the command line."""

import sys

from ibs_study.cli import main

sys.exit(main())
