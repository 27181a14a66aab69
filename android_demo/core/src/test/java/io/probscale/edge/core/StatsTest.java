package io.probscale.edge.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.Map;

import org.junit.Test;

public class StatsTest {
    @Test
    public void percentilesMatchNumpyLinear() {
        double[] a = {5, 1, 4, 2, 3};
        assertEquals(3.0, Stats.percentile(a, 50), 1e-12);
        assertEquals(1.0, Stats.percentile(a, 0), 1e-12);
        assertEquals(5.0, Stats.percentile(a, 100), 1e-12);
        assertEquals(4.6, Stats.percentile(a, 90), 1e-12); // numpy.percentile([1..5], 90) = 4.6
        assertEquals(4.96, Stats.percentile(a, 99), 1e-12);
        double[] b = {10, 20};
        assertEquals(15.0, Stats.percentile(b, 50), 1e-12);
        assertEquals(19.8, Stats.percentile(b, 98), 1e-12);
        assertEquals(7.0, Stats.percentile(new double[] {7}, 99), 0);
        double[] h = new double[100];
        for (int k = 0; k < 100; k++) {
            h[k] = k + 1; // 1..100
        }
        assertEquals(50.5, Stats.percentile(h, 50), 1e-12);
        assertEquals(90.1, Stats.percentile(h, 90), 1e-9);
        assertEquals(99.01, Stats.percentile(h, 99), 1e-9);
        assertEquals(5.0, a[0], 0); // input not reordered
    }

    @Test
    public void latencySummary() {
        Map<String, Object> m = Stats.latencySummary(new double[] {1, 2, 3, 4});
        assertEquals(2.5, (Double) m.get("mean_ms"), 1e-12);
        assertEquals(Math.sqrt(1.25), (Double) m.get("std_ms"), 1e-12); // population std, like numpy
        assertEquals(1.0, (Double) m.get("min_ms"), 0);
        assertEquals(4.0, (Double) m.get("max_ms"), 0);
        assertEquals(2.5, (Double) m.get("p50_ms"), 1e-12);
        assertEquals(3.7, (Double) m.get("p90_ms"), 1e-12);
        assertEquals(3.85, (Double) m.get("p95_ms"), 1e-12);
        assertEquals(3.97, (Double) m.get("p99_ms"), 1e-12);
        assertEquals("[mean_ms, std_ms, min_ms, max_ms, p50_ms, p90_ms, p95_ms, p99_ms]", m.keySet().toString());
    }

    @Test
    public void softmaxAndArgmax() {
        float[] p = Stats.softmax(new float[] {1f, 2f, 3f});
        assertEquals(0.09003057f, p[0], 1e-6);
        assertEquals(0.24472847f, p[1], 1e-6);
        assertEquals(0.66524096f, p[2], 1e-6);
        assertEquals(2, Stats.argmax(p));
        float[] big = Stats.softmax(new float[] {1000f, 1000f, -1000f});
        assertEquals(0.5f, big[0], 1e-6);
        assertEquals(0.5f, big[1], 1e-6);
        assertEquals(0f, big[2], 1e-12);
        assertEquals(0, Stats.argmax(big)); // first on ties
        assertEquals(1f, Stats.softmax(new float[] {-3f})[0], 0);
        float s = 0;
        for (float x : Stats.softmax(new float[] {0.1f, -7f, 12f, 3.3f})) {
            s += x;
        }
        assertEquals(1f, s, 1e-6);
        try {
            Stats.softmax(new float[] {Float.NaN});
            assertTrue("NaN accepted", false);
        } catch (IllegalArgumentException expected) {
            // ok
        }
    }
}
