"""`python -m voice_common HOST:PORT [SERVICE]`: the health-check command."""

import sys

from voice_common.healthcheck import main

sys.exit(main())
