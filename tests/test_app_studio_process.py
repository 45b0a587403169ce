"""`ia3 studio` owns its embedded workers: they end with it, even when it is killed."""

import os
import signal

from studio_support import running_studio, wait_gone


def test_embedded_workers_end_when_the_studio_is_killed(tmp_path):
    with running_studio(tmp_path, workers=2) as studio:
        assert len([p for p in studio.workers if p]) >= 2
        os.kill(studio.process.pid, signal.SIGKILL)  # no chance to stop them itself
        studio.process.wait()
        assert wait_gone(studio.workers, timeout_s=30) == []
