package io.probscale.edge.core;

import java.util.ArrayList;
import java.util.List;

/** An in-memory semantic-search index: texts and their embeddings; top-k by cosine similarity. */
public final class EmbeddingIndex {
    /** One search result: the row of the text in the index, its text and its similarity to the query. */
    public static final class Hit {
        public final int row;
        public final String text;
        public final float score;

        Hit(int row, String text, float score) {
            this.row = row;
            this.text = text;
            this.score = score;
        }
    }

    private final List<String> texts = new ArrayList<String>();
    private final List<float[]> vectors = new ArrayList<float[]>();

    public void add(String text, float[] embedding) {
        if (!vectors.isEmpty() && embedding.length != vectors.get(0).length) {
            throw new IllegalArgumentException("embedding of width " + embedding.length + ", the index holds "
                    + vectors.get(0).length);
        }
        texts.add(text);
        vectors.add(embedding.clone());
    }

    public int size() {
        return texts.size();
    }

    /** The {@code k} most similar texts to {@code query}, best first (ties: the earlier row first). */
    public List<Hit> search(float[] query, int k) {
        List<Hit> all = new ArrayList<Hit>();
        for (int i = 0; i < vectors.size(); i++) {
            all.add(new Hit(i, texts.get(i), SentencePooling.cosine(query, vectors.get(i))));
        }
        java.util.Collections.sort(all, (a, b) -> a.score != b.score ? Float.compare(b.score, a.score)
                : Integer.compare(a.row, b.row));
        return all.subList(0, Math.min(Math.max(k, 0), all.size()));
    }
}
