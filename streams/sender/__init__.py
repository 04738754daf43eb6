"""The send ledger: delivers ``dispatch`` commands at most once per step execution (SPEC §7).

``dripdrop.step_executions`` is the ledger. A row moves ``intent → sending`` in a claim
transaction, its email goes out, and a later transaction writes ``sent`` / ``failed`` /
``ambiguous``. A row becomes ``sending`` only when a send worker is free to hand it to the
provider at once: each of the ``concurrency`` workers holds at most one row, and one ledger
task claims a row for every worker that asks, in the same transaction (one round trip) that
records the outcomes those workers just finished. So at any moment at most ``concurrency``
rows of a batch are ``sending``, and a crash leaves only those (the sends really in flight)
``ambiguous``, never a batch claimed ahead (issue 11). What makes it safe:

* Only a row claimed from ``intent`` (by a command of the row's own tenant) is sent, so a
  duplicate or replayed command is a no-op; another tenant's row is never touched.
* The claim re-reads the enrollment: a reply committed before the claim means no send
  (reply-to-stop is causal, SPEC §8); such rows become ``cancelled``.
* While it sends, the claimer holds a session advisory lock per claimed row. A row found in
  ``sending`` whose lock is free belonged to a worker that died mid-send: it becomes
  ``ambiguous`` and is never resent. A row whose lock is held is being sent right now by
  another worker (a zombie during a rebalance): it is left alone.

No Faust and no Kafka here; the sender agent decodes, calls ``deliver_batch`` and publishes.

Modules: ``_sender`` (``Sender``), ``_stream`` (workers, ledger task, hand-off pacing),
``_ledger`` (SQL and transactions), ``_outcome`` (result records, outcome classification).
"""

from streams.sender._ledger import INTERRUPTED
from streams.sender._outcome import BatchOutcome, Command, DispatchResult, SenderDatabaseError
from streams.sender._sender import DEFAULT_CONCURRENCY, Sender

__all__ = [
    "DEFAULT_CONCURRENCY",
    "INTERRUPTED",
    "BatchOutcome",
    "Command",
    "DispatchResult",
    "Sender",
    "SenderDatabaseError",
]
