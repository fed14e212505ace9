"""The gate transaction: one answer per traveller (ACCEPT, RETRY or REFER)."""
