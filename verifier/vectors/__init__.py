"""1:N vector indexes behind one interface: exact FAISS, approximate FAISS (IVF)
and Milvus. The registry's duplicate search picks one by configuration
(``registry.index``); see :mod:`verifier.vectors.base`."""
