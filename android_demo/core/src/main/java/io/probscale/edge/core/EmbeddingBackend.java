package io.probscale.edge.core;

/** Runs an embedding bundle's model on one encoded text: its token embeddings [tokens][width]. */
public interface EmbeddingBackend {
    float[][] tokenEmbeddings(Encoding encoding) throws Exception;
}
