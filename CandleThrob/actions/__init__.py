"""Corporate actions: the ledger of splits and dividends, and the adjustment factors made from it."""
