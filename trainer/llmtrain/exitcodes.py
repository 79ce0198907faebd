"""Exit codes of the workload CLIs: a contract with the Jobs' podFailurePolicy.

Permanent failures fail the Job at once (retrying cannot help); everything else counts against the
Job's backoffLimit and resumes from the latest checkpoint.
"""

OK = 0
#: Bad input: an invalid spec, missing data, incompatible checkpoint. Permanent.
BAD_INPUT = 2
#: Training diverged (NaN/Inf loss) after saving the last good state. Permanent.
DIVERGED = 3
#: A transient failure (storage or network unavailable, peer lost): retry. (EX_TEMPFAIL)
RETRYABLE = 75

PERMANENT = (BAD_INPUT, DIVERGED)
