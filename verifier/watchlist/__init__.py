"""Watch-lists: the durable store of subjects and templates, the FAISS index derived from it, and 1:N search."""
