package io.probscale.edge.core;

/** Model inputs for one text at batch size 1: ids with [CLS]/[SEP], attention mask (1s) and token types (0s). */
public final class Encoding {
    public final long[] inputIds;
    public final long[] attentionMask;
    public final long[] tokenTypeIds;
    /** True when the text produced more word pieces than fit in max_length and was cut. */
    public final boolean truncated;

    Encoding(long[] inputIds, boolean truncated) {
        this.inputIds = inputIds;
        this.attentionMask = new long[inputIds.length];
        this.tokenTypeIds = new long[inputIds.length];
        java.util.Arrays.fill(attentionMask, 1L);
        this.truncated = truncated;
    }

    public int length() {
        return inputIds.length;
    }

    /** The named model input ("input_ids", "attention_mask" or "token_type_ids"). */
    public long[] input(String name) {
        if ("input_ids".equals(name)) {
            return inputIds;
        }
        if ("attention_mask".equals(name)) {
            return attentionMask;
        }
        if ("token_type_ids".equals(name)) {
            return tokenTypeIds;
        }
        throw new IllegalArgumentException("the model asks for an input this app does not know how to fill: " + name);
    }
}
