package io.probscale.edge.core;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/** Softmax, argmax and latency statistics (same definitions as runtime/bench.py, i.e. numpy's). */
public final class Stats {
    private Stats() {}

    /** Numerically stable softmax (subtract the max first); computed in double, returned as float. */
    public static float[] softmax(float[] logits) {
        if (logits.length == 0) {
            throw new IllegalArgumentException("softmax of an empty vector");
        }
        double max = Double.NEGATIVE_INFINITY;
        for (float v : logits) {
            if (Float.isNaN(v)) {
                throw new IllegalArgumentException("logits contain NaN");
            }
            max = Math.max(max, v);
        }
        double[] e = new double[logits.length];
        double sum = 0;
        for (int k = 0; k < logits.length; k++) {
            e[k] = max == Double.POSITIVE_INFINITY ? (logits[k] == max ? 1 : 0) : Math.exp(logits[k] - max);
            sum += e[k];
        }
        float[] p = new float[logits.length];
        for (int k = 0; k < logits.length; k++) {
            p[k] = (float) (e[k] / sum);
        }
        return p;
    }

    /** Index of the largest value; the first one on ties (like numpy.argmax). */
    public static int argmax(float[] v) {
        if (v.length == 0) {
            throw new IllegalArgumentException("argmax of an empty vector");
        }
        int best = 0;
        for (int k = 1; k < v.length; k++) {
            if (v[k] > v[best]) {
                best = k;
            }
        }
        return best;
    }

    /** q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default). */
    public static double percentile(double[] values, double q) {
        if (values.length == 0) {
            throw new IllegalArgumentException("percentile of no values");
        }
        if (q < 0 || q > 100) {
            throw new IllegalArgumentException("percentile must be in [0, 100]");
        }
        double[] a = values.clone();
        Arrays.sort(a);
        return sortedPercentile(a, q);
    }

    static double sortedPercentile(double[] a, double q) {
        double pos = (a.length - 1) * (q / 100.0);
        int lo = (int) Math.floor(pos);
        int hi = Math.min(lo + 1, a.length - 1);
        double frac = pos - lo;
        return a[lo] + (a[hi] - a[lo]) * frac;
    }

    /** mean/std (population)/min/max/p50/p90/p95/p99 in the bench schema's "latency" layout. */
    public static Map<String, Object> latencySummary(double[] ms) {
        if (ms.length == 0) {
            throw new IllegalArgumentException("no latencies");
        }
        double[] a = ms.clone();
        Arrays.sort(a);
        double sum = 0;
        for (double v : a) {
            sum += v;
        }
        double mean = sum / a.length;
        double ss = 0;
        for (double v : a) {
            ss += (v - mean) * (v - mean);
        }
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("mean_ms", mean);
        m.put("std_ms", Math.sqrt(ss / a.length));
        m.put("min_ms", a[0]);
        m.put("max_ms", a[a.length - 1]);
        m.put("p50_ms", sortedPercentile(a, 50));
        m.put("p90_ms", sortedPercentile(a, 90));
        m.put("p95_ms", sortedPercentile(a, 95));
        m.put("p99_ms", sortedPercentile(a, 99));
        return m;
    }
}
