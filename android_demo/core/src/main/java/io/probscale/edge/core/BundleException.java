package io.probscale.edge.core;

/** A bundle that cannot be used: message says what is wrong, {@link #hint} what to do about it. */
public class BundleException extends Exception {
    private static final long serialVersionUID = 1L;

    public final String hint;

    public BundleException(String message, String hint) {
        super(message + (hint == null || hint.isEmpty() ? "" : " (" + hint + ")"));
        this.hint = hint;
    }
}
