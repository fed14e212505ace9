"""The storage layer: what is common to every database file the service keeps,
whatever it stores (see DESIGN.md). For now: storage faults and file identity."""
