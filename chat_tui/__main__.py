"""`python -m chat_tui` is `chat-tui`."""

import sys

from .cli import main

sys.exit(main())
