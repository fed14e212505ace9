"""The storage layer: what is common to every database file the service keeps,
whatever it stores (see DESIGN.md): the engine (:mod:`~verifier.storage.database`),
the change feed (:mod:`~verifier.storage.feed`), storage faults and file identity
(:mod:`~verifier.storage.faults`)."""
