package io.probscale.edge.core;

/**
 * Token embeddings to one sentence embedding, as the bundle's manifest says ({@code embedding.pooling},
 * {@code embedding.normalize}): the mean over the real tokens (attention mask 1) or the first token, then L2
 * normalization. The same arithmetic as the Python runtime's {@code pool_embeddings} (float32 sums in token
 * order, the mean's denominator at least 1e-9, the norm at least 1e-12), host-tested against it on recorded
 * model outputs (SentencePoolingTest).
 */
public final class SentencePooling {
    public static final String MEAN = "mean";
    public static final String CLS = "cls";

    private SentencePooling() {}

    /** Pools {@code tokens} ([tokens][dim]) with {@code mask} (one entry per token). */
    public static float[] pool(float[][] tokens, long[] mask, String pooling, boolean normalize) {
        if (tokens.length == 0 || tokens.length != mask.length) {
            throw new IllegalArgumentException("token embeddings (" + tokens.length + ") and mask (" + mask.length
                    + ") disagree, or are empty");
        }
        int dim = tokens[0].length;
        float[] out = new float[dim];
        if (CLS.equals(pooling)) {
            System.arraycopy(tokens[0], 0, out, 0, dim);
        } else if (MEAN.equals(pooling)) {
            float count = 0f;
            for (int t = 0; t < tokens.length; t++) {
                if (tokens[t].length != dim) {
                    throw new IllegalArgumentException("token " + t + " has width " + tokens[t].length + ", not " + dim);
                }
                float m = (float) mask[t];
                count += m;
                for (int d = 0; d < dim; d++) {
                    out[d] += tokens[t][d] * m;
                }
            }
            float denom = Math.max(count, 1e-9f);
            for (int d = 0; d < dim; d++) {
                out[d] /= denom;
            }
        } else {
            throw new IllegalArgumentException("unknown pooling '" + pooling + "' (mean or cls)");
        }
        return normalize ? l2Normalize(out) : out;
    }

    /** {@code v} divided by its L2 norm (at least 1e-12), in place; returns {@code v}. */
    public static float[] l2Normalize(float[] v) {
        double sq = 0;
        for (float x : v) {
            sq += (double) x * x;
        }
        float norm = (float) Math.max(Math.sqrt(sq), 1e-12);
        for (int d = 0; d < v.length; d++) {
            v[d] /= norm;
        }
        return v;
    }

    /** Cosine similarity of two vectors (dot product over the product of the norms). */
    public static float cosine(float[] a, float[] b) {
        if (a.length != b.length) {
            throw new IllegalArgumentException("vectors of width " + a.length + " and " + b.length);
        }
        double dot = 0, na = 0, nb = 0;
        for (int d = 0; d < a.length; d++) {
            dot += (double) a[d] * b[d];
            na += (double) a[d] * a[d];
            nb += (double) b[d] * b[d];
        }
        return (float) (dot / Math.max(Math.sqrt(na) * Math.sqrt(nb), 1e-12));
    }
}
