package io.probscale.edge.demo;

import android.app.Activity;
import android.content.Intent;
import android.os.Bundle;
import android.util.Log;
import android.widget.Button;
import android.widget.EditText;
import android.widget.TextView;

import java.io.File;
import java.io.FileOutputStream;
import java.nio.charset.StandardCharsets;
import java.text.SimpleDateFormat;
import java.util.Date;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import io.probscale.edge.core.Benchmark;
import io.probscale.edge.core.Json;

/** Warm-up, N timed runs, p50/p90/p99; exports probscale-edge.bench/1 JSON. */
public class BenchmarkActivity extends Activity {
    private static final String TAG = "probscale-bench";
    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private TextView output;
    private Button run;
    private Button export;
    private String lastJson;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        setContentView(R.layout.activity_benchmark);
        output = findViewById(R.id.bench_output);
        run = findViewById(R.id.bench_run);
        export = findViewById(R.id.bench_export);
        export.setEnabled(false);
        run.setOnClickListener(v -> start());
        export.setOnClickListener(v -> exportJson());
    }

    private static int intOf(EditText e, int dflt) {
        try {
            return Integer.parseInt(e.getText().toString().trim());
        } catch (NumberFormatException ex) {
            return dflt;
        }
    }

    private void start() {
        final int warmup = Math.max(0, intOf(findViewById(R.id.bench_warmup), 10));
        final int runs = Math.max(1, intOf(findViewById(R.id.bench_runs), 100));
        final int threads = Math.max(0, intOf(findViewById(R.id.bench_threads), 0));
        final String text = ((EditText) findViewById(R.id.bench_text)).getText().toString();
        run.setEnabled(false);
        export.setEnabled(false);
        output.setText(R.string.bench_loading);
        worker.execute(() -> {
            ClassifierHolder.Loaded l = null;
            try {
                l = ClassifierHolder.load(this, threads);
                Benchmark b = new Benchmark();
                b.warmupRuns = warmup;
                b.numRuns = runs;
                b.threads = threads > 0 ? threads : null;
                b.precision = l.bundle.manifest.precision;
                b.modelBytes = l.bundle.manifest.files.get(l.bundle.manifest.modelFile).bytes;
                b.initMs = l.backend.initMs;
                if (!text.trim().isEmpty()) {
                    b.text = text;
                }
                Map<String, Object> res = b.run(l.classifier, (phase, done, total) -> {
                    if (done == total || done % 10 == 0) {
                        runOnUiThread(() -> output.setText(getString(R.string.bench_progress, phase, done, total)));
                    }
                });
                res.put("model_file", l.bundle.manifest.modelFile);
                res.put("device", android.os.Build.MANUFACTURER + " " + android.os.Build.MODEL
                        + " (Android " + android.os.Build.VERSION.RELEASE + ", " + android.os.Build.SUPPORTED_ABIS[0] + ")");
                final String json = Json.write(res);
                Log.i(TAG, json);
                @SuppressWarnings("unchecked")
                Map<String, Object> lat = (Map<String, Object>) res.get("latency");
                final String summary = String.format(Locale.ROOT,
                        "init %.1f ms, first %.2f ms\nseq %s, threads %s, %s\np50 %.2f ms\np90 %.2f ms\np99 %.2f ms\nmean %.2f ± %.2f ms",
                        (Double) res.get("init_ms"), (Double) res.get("first_inference_ms"), res.get("sequence_length"),
                        threads > 0 ? String.valueOf(threads) : "default", res.get("precision"),
                        (Double) lat.get("p50_ms"), (Double) lat.get("p90_ms"), (Double) lat.get("p99_ms"),
                        (Double) lat.get("mean_ms"), (Double) lat.get("std_ms"));
                runOnUiThread(() -> {
                    lastJson = json;
                    output.setText(summary);
                    export.setEnabled(true);
                    run.setEnabled(true);
                });
            } catch (Exception e) {
                final String msg = getString(R.string.error_prefix) + " " + e.getMessage();
                runOnUiThread(() -> {
                    output.setText(msg);
                    run.setEnabled(true);
                });
            } finally {
                if (l != null) {
                    try {
                        l.backend.close();
                    } catch (Exception ignored) {
                        // benchmark session is per run
                    }
                }
            }
        });
    }

    /** Writes the JSON to the app's external files folder (adb pull) and offers to share it. */
    private void exportJson() {
        if (lastJson == null) {
            return;
        }
        File dir = getExternalFilesDir(null);
        if (dir == null) {
            dir = getFilesDir();
        }
        String stamp = new SimpleDateFormat("yyyyMMdd-HHmmss", Locale.ROOT).format(new Date());
        File f = new File(dir, "bench-" + stamp + ".json");
        try (FileOutputStream o = new FileOutputStream(f)) {
            o.write(lastJson.getBytes(StandardCharsets.UTF_8));
            output.append("\n\n" + getString(R.string.bench_saved, f.getAbsolutePath()));
        } catch (Exception e) {
            output.append("\n\n" + getString(R.string.error_prefix) + " " + e.getMessage());
        }
        Intent share = new Intent(Intent.ACTION_SEND);
        share.setType("application/json");
        share.putExtra(Intent.EXTRA_SUBJECT, f.getName());
        share.putExtra(Intent.EXTRA_TEXT, lastJson);
        startActivity(Intent.createChooser(share, getString(R.string.bench_export)));
    }

    @Override
    protected void onDestroy() {
        worker.shutdown();
        super.onDestroy();
    }
}
