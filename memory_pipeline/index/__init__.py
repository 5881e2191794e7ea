"""Chunk stores: LanceDB (rows, vectors, full text) and a FAISS mirror of the same vectors and ids."""
