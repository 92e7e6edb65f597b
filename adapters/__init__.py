"""wallet-ledger edges: persistence, bsv-sdk, broadcasters, CLI."""
