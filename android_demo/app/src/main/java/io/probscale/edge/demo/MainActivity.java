package io.probscale.edge.demo;

import android.app.Activity;
import android.content.Intent;
import android.os.Bundle;
import android.view.KeyEvent;
import android.view.inputmethod.EditorInfo;
import android.widget.Button;
import android.widget.EditText;
import android.widget.TextView;

import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import io.probscale.edge.core.BundleManifest;
import io.probscale.edge.core.Prediction;

/** Type a text, see the label, its confidence and the latency. */
public class MainActivity extends Activity {
    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private ClassifierHolder.Loaded loaded;
    private TextView status;
    private TextView result;
    private EditText input;
    private Button classify;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        setContentView(R.layout.activity_main);
        status = findViewById(R.id.status);
        result = findViewById(R.id.result);
        input = findViewById(R.id.input);
        classify = findViewById(R.id.classify);
        Button bench = findViewById(R.id.open_benchmark);
        classify.setEnabled(false);
        classify.setOnClickListener(v -> classify());
        input.setOnEditorActionListener((TextView v, int actionId, KeyEvent e) -> {
            if (actionId == EditorInfo.IME_ACTION_DONE && classify.isEnabled()) {
                classify();
                return true;
            }
            return false;
        });
        bench.setOnClickListener(v -> startActivity(new Intent(this, BenchmarkActivity.class)));
        status.setText(R.string.status_verifying);
        worker.execute(() -> {
            try {
                ClassifierHolder.Loaded l = ClassifierHolder.load(this, 0);
                BundleManifest m = l.bundle.manifest;
                if (m.isEmbedding()) { // an embedding bundle has no labels: the embed-and-search screen instead
                    runOnUiThread(() -> {
                        startActivity(new Intent(this, SearchActivity.class));
                        finish();
                    });
                    return;
                }
                String info = getString(R.string.status_ready, m.modelFile, m.precision, m.labels.size(),
                        m.files.size(), l.backend.initMs);
                runOnUiThread(() -> {
                    loaded = l;
                    status.setText(info);
                    classify.setEnabled(true);
                });
            } catch (Exception e) {
                String msg = getString(R.string.status_refused, e.getMessage());
                runOnUiThread(() -> status.setText(msg));
            }
        });
    }

    private void classify() {
        final String text = input.getText().toString();
        classify.setEnabled(false);
        worker.execute(() -> {
            String shown;
            try {
                Prediction p = loaded.classifier.predict(text);
                shown = String.format(Locale.ROOT, "%s\n%s %.1f%%\n%s %.2f ms\n%s %d%s",
                        p.label, getString(R.string.confidence), 100.0 * p.confidence,
                        getString(R.string.latency), p.latencyMs,
                        getString(R.string.tokens), p.numTokens, p.truncated ? " " + getString(R.string.truncated) : "");
            } catch (Exception e) {
                shown = getString(R.string.error_prefix) + " " + e.getMessage();
            }
            final String s = shown;
            runOnUiThread(() -> {
                result.setText(s);
                classify.setEnabled(true);
            });
        });
    }

    @Override
    protected void onDestroy() {
        worker.shutdown();
        if (loaded != null) {
            try {
                loaded.backend.close();
            } catch (Exception ignored) {
                // closing on exit
            }
        }
        super.onDestroy();
    }
}
