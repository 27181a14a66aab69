package io.probscale.edge.demo;

import android.app.Activity;
import android.os.Bundle;
import android.view.KeyEvent;
import android.view.inputmethod.EditorInfo;
import android.widget.Button;
import android.widget.EditText;
import android.widget.TextView;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.Charset;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import io.probscale.edge.core.EmbeddingIndex;
import io.probscale.edge.core.TextEmbedder;

/**
 * Embed-and-search with an embedding bundle ({@code "kind": "embed"}): the texts of
 * {@code assets/search_corpus.txt} (one a line; a few built-in sentences without it) are embedded once into
 * an {@link EmbeddingIndex}; a query shows the top 5 by cosine similarity and the query's embedding latency.
 */
public class SearchActivity extends Activity {
    private static final String[] FALLBACK = {"the film is a quiet, patient character study",
        "a loud, empty action movie", "Free entry in a weekly competition, text WIN now",
        "are we still meeting for lunch tomorrow?", "What is the tallest mountain in Europe?",
        "Who wrote the novel War and Peace?", "oil prices rose after the opec meeting",
        "the company reported higher quarterly earnings"};
    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private final EmbeddingIndex index = new EmbeddingIndex();
    private TextEmbedder embedder;
    private TextView status;
    private TextView results;
    private EditText query;
    private Button search;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        setContentView(R.layout.activity_search);
        status = findViewById(R.id.search_status);
        results = findViewById(R.id.search_results);
        query = findViewById(R.id.search_query);
        search = findViewById(R.id.search_button);
        search.setEnabled(false);
        search.setOnClickListener(v -> runSearch());
        query.setOnEditorActionListener((TextView v, int actionId, KeyEvent e) -> {
            if (actionId == EditorInfo.IME_ACTION_SEARCH && search.isEnabled()) {
                runSearch();
                return true;
            }
            return false;
        });
        status.setText(R.string.status_verifying);
        worker.execute(this::buildIndex);
    }

    private void buildIndex() {
        try {
            ClassifierHolder.Loaded l = ClassifierHolder.load(this, 0);
            TextEmbedder e = new TextEmbedder(l.bundle.tokenizer(), l.backend, l.bundle.manifest);
            List<String> texts = corpus();
            long t0 = System.nanoTime();
            for (String t : texts) {
                index.add(t, e.embed(t));
            }
            double ms = (System.nanoTime() - t0) / 1e6;
            String info = getString(R.string.search_ready, index.size(), ms, l.bundle.manifest.embeddingDimension,
                    l.bundle.manifest.precision);
            runOnUiThread(() -> {
                embedder = e;
                status.setText(info);
                search.setEnabled(true);
            });
        } catch (Exception ex) {
            String msg = getString(R.string.status_refused, ex.getMessage());
            runOnUiThread(() -> status.setText(msg));
        }
    }

    private List<String> corpus() {
        List<String> out = new ArrayList<String>();
        try (BufferedReader r = new BufferedReader(new InputStreamReader(getAssets().open("search_corpus.txt"),
                Charset.forName("UTF-8")))) {
            for (String line; (line = r.readLine()) != null; ) {
                if (!line.trim().isEmpty()) {
                    out.add(line.trim());
                }
            }
        } catch (java.io.IOException missing) {
            out.clear();
        }
        if (out.isEmpty()) {
            for (String s : FALLBACK) {
                out.add(s);
            }
        }
        return out;
    }

    private void runSearch() {
        final String q = query.getText().toString();
        search.setEnabled(false);
        worker.execute(() -> {
            StringBuilder sb = new StringBuilder();
            try {
                long t0 = System.nanoTime();
                float[] v = embedder.embed(q);
                double ms = (System.nanoTime() - t0) / 1e6;
                sb.append(String.format(Locale.ROOT, "%s %.2f ms\n\n", getString(R.string.latency), ms));
                int rank = 1;
                for (EmbeddingIndex.Hit h : index.search(v, 5)) {
                    sb.append(String.format(Locale.ROOT, "%d. %.3f  %s\n", rank++, h.score, h.text));
                }
            } catch (Exception e) {
                sb.append(getString(R.string.error_prefix)).append(' ').append(e.getMessage());
            }
            final String s = sb.toString();
            runOnUiThread(() -> {
                results.setText(s);
                search.setEnabled(true);
            });
        });
    }

    @Override
    protected void onDestroy() {
        worker.shutdownNow();
        super.onDestroy();
    }
}
