"""The traveller registry: registration at the gate, verification by traveller
id, duplicate detection over every registered traveller, erasure and retention."""
