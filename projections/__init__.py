"""wallet-ledger read models."""
