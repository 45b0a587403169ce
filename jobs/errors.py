"""Exceptions of durable work: jobs, who may touch what, and the host's limits.

Like the engine's errors they subclass IA3Error, so the studio and the CLI show their
messages as they are, never a traceback.
"""

from ia3engine.errors import IA3Error


class JobError(IA3Error, ValueError):
    """A job id is unknown, or the job is in a state that forbids the request."""


class AccessDeniedError(IA3Error, PermissionError):
    """The signed-in user may not see or change this job, dataset or adapter (or none is signed in).

    Its message never says whether the thing exists, so ids cannot be probed.
    """


class LimitError(IA3Error, ValueError):
    """A request goes over a limit the host set (upload size, rows, steps, jobs in the queue)."""
