package io.probscale.edge.core;

/** Tokenizer + embedding backend + the manifest's pooling: text in, sentence embedding out. */
public final class TextEmbedder {
    private final BertTokenizer tokenizer;
    private final EmbeddingBackend backend;
    private final BundleManifest manifest;

    public TextEmbedder(BertTokenizer tokenizer, EmbeddingBackend backend, BundleManifest manifest) {
        if (!manifest.isEmbedding()) {
            throw new IllegalArgumentException("the bundle is not an embedding bundle (manifest kind is not embed)");
        }
        this.tokenizer = tokenizer;
        this.backend = backend;
        this.manifest = manifest;
    }

    public float[] embed(String text) throws Exception {
        Encoding enc = tokenizer.encode(text);
        float[][] tokens = backend.tokenEmbeddings(enc);
        if (tokens.length != enc.length() || tokens[0].length != manifest.embeddingDimension) {
            throw new IllegalStateException("the model returned token embeddings of shape [" + tokens.length + ", "
                    + tokens[0].length + "], not [" + enc.length() + ", " + manifest.embeddingDimension + "]");
        }
        return SentencePooling.pool(tokens, enc.attentionMask, manifest.embeddingPooling, manifest.embeddingNormalize);
    }
}
