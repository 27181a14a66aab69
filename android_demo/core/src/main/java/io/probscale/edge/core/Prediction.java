package io.probscale.edge.core;

/** The result of classifying one text. */
public final class Prediction {
    public final String label;
    public final int labelIndex;
    public final float confidence;
    public final float[] probabilities;
    public final int numTokens;
    public final boolean truncated;
    /** Tokenize + model + softmax, milliseconds. */
    public final double latencyMs;

    Prediction(String label, int labelIndex, float[] probabilities, int numTokens, boolean truncated, double latencyMs) {
        this.label = label;
        this.labelIndex = labelIndex;
        this.confidence = probabilities[labelIndex];
        this.probabilities = probabilities;
        this.numTokens = numTokens;
        this.truncated = truncated;
        this.latencyMs = latencyMs;
    }
}
