"""What ScaNN's C++ code writes to file descriptor 2, passed to a logger instead."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

# fd 2 belongs to the whole process: one capture at a time (re-entrant, as each level
# saves and restores whatever fd 2 was when it began)
_STDERR_LOCK = threading.RLock()


@contextlib.contextmanager
def _native_stderr_to_log(what: str) -> Iterator[None]:
    """Send what C++ code writes to file descriptor 2 to this module's logger (DEBUG).

    ScaNN logs through absl, which writes straight to fd 2 ("WARNING: All log messages
    before absl::InitializeLog() ...", "I0000 ... partitioner_factory_base.cc:58] ...")
    and reads no environment variable that turns this off (absl's --minloglevel and
    --stderrthreshold are command-line flags only). So fd 2 points at a temporary file
    for the duration and is restored in `finally`. In a Jupyter kernel fd 2 is
    ipykernel's pipe to the notebook, and that pipe is what is put back.
    If the call raises, the captured text is also written back to stderr, since it
    may explain the failure; if the process dies inside the call (an absl CHECK
    aborts), the lines stay in the temporary file, named workbench-native-stderr-*.
    Python code writing to stderr from another thread meanwhile is captured too.
    """
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all (a daemon): nothing reaches a terminal anyway
            yield
            return
        sink = tempfile.NamedTemporaryFile(prefix="workbench-native-stderr-", delete=False)
        failed = False
        try:
            if sys.stderr is not None:
                sys.stderr.flush()  # Python's own buffered text belongs before the capture
            os.dup2(sink.fileno(), 2)
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            sink.close()
            os.unlink(sink.name)
            for line in text.splitlines():
                if line.strip():
                    log.debug("%s: %s", what, line)
            if failed and text and sys.stderr is not None:
                sys.stderr.write(text)
                sys.stderr.flush()
