"""Revenue recognition (ASC 606 / IFRS 15) and the general ledger."""

from revrec.models.ledger import Account, AccountingPeriod, JournalEntry, JournalLine, PostedSource
from revrec.models.revenue import (
    ContractModification,
    ObligationAdjustment,
    PerformanceObligation,
    ProductRevenueRule,
    Recognition,
    RecognitionRun,
    RevenueContract,
    StandaloneSellingPrice,
)

__all__ = [
    "Account",
    "AccountingPeriod",
    "ContractModification",
    "JournalEntry",
    "JournalLine",
    "ObligationAdjustment",
    "PerformanceObligation",
    "PostedSource",
    "ProductRevenueRule",
    "Recognition",
    "RecognitionRun",
    "RevenueContract",
    "StandaloneSellingPrice",
]
