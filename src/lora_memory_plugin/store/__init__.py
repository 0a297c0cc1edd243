"""The buffer tier: Chroma collections per namespace, our embedder, chunking and filters."""
