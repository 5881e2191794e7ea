"""Index: documents to searchable chunks, and search over them (the Dagster ``index`` group).

``chunking`` and the embedders (``embedding``, ``embedding_use``, ``embedding_cache``) make the chunks and
vectors; ``sync`` writes them to the stores (``lancedb_store``, ``faiss_store``, ``fts``), ``fanout`` spreads
the embedding over partitions; ``search``, ``recall``, ``timespan``, ``lance_reader`` and ``search_log``
answer queries; ``evaluation`` measures retrieval on the hand-written question set.
"""
