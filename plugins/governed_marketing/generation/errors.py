"""Why drafting stopped: the errors every transport raises, in one place for the Airflow edge to import.

`orchestration/failures.py` lists the deterministic ones (a retry cannot fix them); keeping them in
this light module spares the edge the import of any transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from governed_marketing.generation.base import DraftRequest


class ProviderError(RuntimeError):
    """A draft could not be produced, or the provider cannot be used as configured."""


class VendorQuotaExhausted(ProviderError):
    """The vendor account's quota or billing is exhausted (429 insufficient_quota): no call can succeed."""


class VendorAuthRejected(ProviderError):
    """The vendor refused the credentials or the project (401/403): no call can succeed."""


class DraftingInterrupted(ProviderError):
    """The run was asked to stop (SIGTERM): nothing more was sent, and the calls in flight were left.

    `in_flight`: units whose request had been sent without an answer yet (in doubt: maybe paid);
    `not_sent`: units handed over (`on_submit`) that never left.
    """

    def __init__(self, message: str, *, in_flight: list[DraftRequest], not_sent: list[DraftRequest]) -> None:
        super().__init__(message)
        self.in_flight = in_flight
        self.not_sent = not_sent
