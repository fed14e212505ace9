"""Replication of the watch-lists: the primary's change feed, replicas that follow it, promotion and fencing."""
