package io.probscale.edge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.Arrays;
import java.util.List;
import java.util.Map;

import org.junit.Test;

public class BenchmarkTest {
    /** A stand-in for the ORT session: "good" in the text -> positive. */
    static final class FakeBackend implements InferenceBackend {
        int calls;

        @Override
        public float[] logits(Encoding e) {
            calls++;
            boolean good = false;
            for (long id : e.inputIds) {
                good |= id == 5;
            }
            return good ? new float[] {-1f, 2f} : new float[] {1f, -1f};
        }

        @Override
        public String name() {
            return "onnxruntime-android";
        }
    }

    static TextClassifier classifier(FakeBackend b) {
        BertTokenizer t = BertTokenizer.fromVocabTxt(BundleVerifierTest.VOCAB, true, 128);
        List<String> labels = Arrays.asList("negative", "positive");
        return new TextClassifier(t, b, labels);
    }

    @Test
    public void predict() throws Exception {
        TextClassifier c = classifier(new FakeBackend());
        Prediction p = c.predict("A GOOD movie");
        assertEquals("positive", p.label);
        assertEquals(1, p.labelIndex);
        assertEquals(Stats.softmax(new float[] {-1f, 2f})[1], p.confidence, 0);
        assertEquals(5, p.numTokens); // [CLS] [UNK] good movie [SEP]
        assertTrue(p.latencyMs >= 0);
        assertEquals("negative", c.predict("bad").label);
    }

    @Test
    @SuppressWarnings("unchecked")
    public void benchJsonHasTheRuntimeSchema() throws Exception {
        FakeBackend fb = new FakeBackend();
        Benchmark b = new Benchmark();
        b.warmupRuns = 3;
        b.numRuns = 20;
        b.threads = 2;
        b.precision = "int8";
        b.modelBytes = 1234;
        b.initMs = 5.5;
        b.text = "good movie";
        Map<String, Object> out = b.run(classifier(fb), null);
        assertEquals(1 + 3 + 20, fb.calls);
        assertEquals("probscale-edge.bench/1", out.get("schema"));
        assertEquals("onnxruntime-android", out.get("backend"));
        assertEquals("int8", out.get("precision"));
        assertEquals(2, out.get("threads"));
        assertEquals(1L, out.get("batch_size"));
        assertEquals(4L, out.get("sequence_length"));
        assertEquals(3L, out.get("warmup_runs"));
        assertEquals(20L, out.get("num_runs"));
        assertEquals(5.5, out.get("init_ms"));
        assertTrue(out.get("first_inference_ms") instanceof Double);
        assertEquals(1234L, out.get("model_bytes"));
        Map<String, Object> lat = (Map<String, Object>) out.get("latency");
        for (String k : new String[] {"mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms"}) {
            assertTrue(k, lat.get(k) instanceof Double);
        }
        assertTrue((Double) lat.get("p50_ms") <= (Double) lat.get("p90_ms"));
        assertTrue((Double) lat.get("p90_ms") <= (Double) lat.get("p99_ms"));
        // the JSON text parses back to the same fields
        Map<String, Object> back = Json.obj(Json.parse(Json.write(out)), "bench");
        assertEquals("probscale-edge.bench/1", back.get("schema"));
        assertEquals(20L, back.get("num_runs"));
        assertEquals(2L, back.get("threads"));
    }
}
