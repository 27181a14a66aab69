package io.probscale.edge.core;

/** Runs the model on one encoded text and returns its logits (one float per label). */
public interface InferenceBackend {
    float[] logits(Encoding encoding) throws Exception;

    /** Name used as "backend" in the bench JSON. */
    String name();
}
