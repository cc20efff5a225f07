"""Keep a message invisible while its job runs, so a long job never runs twice.

The reference agent relies on the queue's 30 s visibility timeout alone: a job that runs longer
makes the message visible again and a second pod runs it too. ``KeepInvisible`` is a heartbeat:
every half timeout it pushes the message's visibility a full timeout into the future with
``ChangeMessageVisibility``, until the job ends.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

__all__ = ["KeepInvisible"]

log = logging.getLogger("inference_workload.visibility")


class KeepInvisible:
    """Context manager: extends a message's visibility every ``timeout / 2`` seconds while open."""

    def __init__(self, sqs: Any, queue_url: str, receipt_handle: str, timeout: float) -> None:
        self.sqs, self.queue_url, self.receipt_handle = sqs, queue_url, receipt_handle
        self.timeout = max(1, round(timeout))
        self.extensions = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="visibility", daemon=True)

    def __enter__(self) -> KeepInvisible:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(self.timeout / 2):
            try:
                self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=self.receipt_handle,
                                                   VisibilityTimeout=self.timeout)
                self.extensions += 1
                log.debug("visibility extended by %ss (%d so far)", self.timeout, self.extensions)
            except Exception:
                # The job goes on; at worst the message reappears and runs twice, as without the heartbeat.
                log.warning("could not extend message visibility", exc_info=True)
