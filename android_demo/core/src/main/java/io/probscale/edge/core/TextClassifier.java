package io.probscale.edge.core;

import java.util.List;

/** Tokenizer + model backend + labels: text in, label out. */
public final class TextClassifier {
    private final BertTokenizer tokenizer;
    private final InferenceBackend backend;
    private final List<String> labels;

    public TextClassifier(BertTokenizer tokenizer, InferenceBackend backend, List<String> labels) {
        this.tokenizer = tokenizer;
        this.backend = backend;
        this.labels = labels;
    }

    public BertTokenizer tokenizer() {
        return tokenizer;
    }

    public InferenceBackend backend() {
        return backend;
    }

    public List<String> labels() {
        return labels;
    }

    public Prediction predict(String text) throws Exception {
        long t0 = System.nanoTime();
        Encoding enc = tokenizer.encode(text);
        float[] logits = backend.logits(enc);
        if (logits.length != labels.size()) {
            throw new IllegalStateException("the model returned " + logits.length + " logits but the bundle has "
                    + labels.size() + " labels");
        }
        float[] p = Stats.softmax(logits);
        int k = Stats.argmax(p);
        double ms = (System.nanoTime() - t0) / 1e6;
        return new Prediction(labels.get(k), k, p, enc.length(), enc.truncated, ms);
    }
}
