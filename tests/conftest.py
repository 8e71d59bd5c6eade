"""Suite-wide set-up."""

from __future__ import annotations

import signal

# A shell starts a background job (`scripts/test &`, a CI runner's job) with SIGINT ignored,
# and children inherit an ignored signal: the tests that press Ctrl-C on a child process
# (sim, run) would then wait forever. Our own handler is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
