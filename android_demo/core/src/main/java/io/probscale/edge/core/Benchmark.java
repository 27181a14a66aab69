package io.probscale.edge.core;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Latency benchmark in the conventions of runtime/bench.py: first inference, warm-up runs, then
 * timed runs of tokenize + model + argmax at batch size 1; result in the "probscale-edge.bench/1" schema.
 */
public final class Benchmark {
    public static final String SCHEMA = "probscale-edge.bench/1";
    public static final String DEFAULT_TEXT = "the film is a quiet, patient character study that rewards attention, although its final act "
            + "leans on coincidence more than it should";

    /** Reports progress (for a UI); may be null. */
    public interface Progress {
        void update(String phase, int done, int total);
    }

    public int warmupRuns = 10;
    public int numRuns = 100;
    /** Intra-op threads used by the backend; null = runtime default. */
    public Integer threads;
    public String precision;
    public long modelBytes;
    /** Time to create the session (measured by the caller), ms. */
    public double initMs;
    public String text = DEFAULT_TEXT;

    public Map<String, Object> run(TextClassifier clf, Progress progress) throws Exception {
        if (numRuns < 1) {
            throw new IllegalArgumentException("num_runs must be at least 1");
        }
        Encoding first = clf.tokenizer().encode(text);
        long t = System.nanoTime();
        clf.backend().logits(first);
        double firstMs = (System.nanoTime() - t) / 1e6;
        double warmSum = 0;
        for (int k = 0; k < warmupRuns; k++) {
            t = System.nanoTime();
            clf.backend().logits(clf.tokenizer().encode(text));
            warmSum += (System.nanoTime() - t) / 1e6;
            if (progress != null) {
                progress.update("warm-up", k + 1, warmupRuns);
            }
        }
        double[] e2e = new double[numRuns];
        double[] session = new double[numRuns];
        String label = null;
        for (int k = 0; k < numRuns; k++) {
            long t0 = System.nanoTime();
            Encoding enc = clf.tokenizer().encode(text);
            long t1 = System.nanoTime();
            float[] logits = clf.backend().logits(enc);
            long t2 = System.nanoTime();
            label = clf.labels().get(Stats.argmax(logits));
            long t3 = System.nanoTime();
            session[k] = (t2 - t1) / 1e6;
            e2e[k] = (t3 - t0) / 1e6;
            if (progress != null) {
                progress.update("runs", k + 1, numRuns);
            }
        }
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("schema", SCHEMA);
        out.put("backend", clf.backend().name());
        out.put("precision", precision);
        out.put("threads", threads);
        out.put("batch_size", 1L);
        out.put("sequence_length", (long) first.length());
        out.put("warmup_runs", (long) warmupRuns);
        out.put("num_runs", (long) numRuns);
        out.put("init_ms", initMs);
        out.put("first_inference_ms", firstMs);
        out.put("warmup_mean_ms", warmupRuns > 0 ? (Object) (warmSum / warmupRuns) : null);
        out.put("latency", Stats.latencySummary(e2e));
        out.put("session_latency", Stats.latencySummary(session));
        out.put("model_bytes", modelBytes);
        out.put("predicted_label", label);
        return out;
    }
}
