package io.probscale.edge.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.util.List;

import org.junit.Test;

/**
 * The core's pooling and normalization against the Python runtime's, on recorded model outputs
 * (tools/make_pooling_vectors.py: a real model's token embeddings of padded batches, and what
 * probscale_edge.runtime.predictor.pool_embeddings makes of them). The folder comes from -Dpooling.dir.
 * Prints "POOLING_VECTORS_MATCHED matched/total max_abs=..." for run_host_tests.sh.
 */
public class SentencePoolingTest {
    private static final double TOLERANCE = 1e-5;

    @Test
    public void recordedOutputsPoolLikePython() throws IOException {
        String dir = System.getProperty("pooling.dir");
        assertTrue("set -Dpooling.dir to the folder written by tools/make_pooling_vectors.py", dir != null);
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(new File(dir, "pooling.bin").toPath()))
                .order(ByteOrder.LITTLE_ENDIAN);
        byte[] magic = new byte[4];
        b.get(magic);
        assertEquals("PEPV", new String(magic, "US-ASCII"));
        assertEquals(1, b.getInt());
        int n = b.getInt();
        int matched = 0;
        int padded = 0;
        double worst = 0;
        for (int r = 0; r < n; r++) {
            String pooling = b.getInt() == 0 ? SentencePooling.MEAN : SentencePooling.CLS;
            boolean normalize = b.getInt() != 0;
            int tokens = b.getInt();
            int dim = b.getInt();
            long[] mask = new long[tokens];
            for (int t = 0; t < tokens; t++) {
                mask[t] = b.getInt();
                padded += mask[t] == 0 ? 1 : 0;
            }
            float[][] emb = new float[tokens][dim];
            for (int t = 0; t < tokens; t++) {
                for (int d = 0; d < dim; d++) {
                    emb[t][d] = b.getFloat();
                }
            }
            float[] want = new float[dim];
            for (int d = 0; d < dim; d++) {
                want[d] = b.getFloat();
            }
            float[] got = SentencePooling.pool(emb, mask, pooling, normalize);
            double diff = 0;
            for (int d = 0; d < dim; d++) {
                diff = Math.max(diff, Math.abs(got[d] - want[d]));
            }
            worst = Math.max(worst, diff);
            matched += diff <= TOLERANCE ? 1 : 0;
        }
        assertEquals("trailing bytes in pooling.bin", 0, b.remaining());
        System.out.println();
        System.out.println("POOLING_VECTORS_MATCHED " + matched + "/" + n + " max_abs=" + worst + " padded_tokens=" + padded);
        assertTrue("no recorded rows", n > 0);
        assertTrue("no padded rows: the mask was not exercised", padded > 0);
        assertEquals("rows pooled differently from Python (max |diff| " + worst + ")", n, matched);
    }

    @Test
    public void meanIgnoresPaddingAndNormalizes() {
        float[][] t = {{1f, 2f}, {3f, 4f}, {100f, 100f}};
        assertArrayEquals(new float[] {2f, 3f}, SentencePooling.pool(t, new long[] {1, 1, 0}, "mean", false), 0f);
        float[] n = SentencePooling.pool(t, new long[] {1, 1, 0}, "mean", true);
        assertEquals(1.0, Math.sqrt(n[0] * n[0] + n[1] * n[1]), 1e-6);
        assertArrayEquals(new float[] {1f, 2f}, SentencePooling.pool(t, new long[] {1, 1, 0}, "cls", false), 0f);
        assertArrayEquals(new float[] {0f, 0f}, SentencePooling.pool(new float[][] {{0f, 0f}}, new long[] {1}, "mean", true), 0f);
    }

    @Test(expected = IllegalArgumentException.class)
    public void unknownPoolingIsRefused() {
        SentencePooling.pool(new float[][] {{1f}}, new long[] {1}, "max", false);
    }

    @Test
    public void indexReturnsNearestFirst() {
        EmbeddingIndex idx = new EmbeddingIndex();
        idx.add("east", new float[] {1f, 0f});
        idx.add("north", new float[] {0f, 1f});
        idx.add("north-east", new float[] {1f, 1f});
        List<EmbeddingIndex.Hit> hits = idx.search(new float[] {0.9f, 1f}, 2);
        assertEquals(2, hits.size());
        assertEquals("north-east", hits.get(0).text);
        assertEquals("north", hits.get(1).text);
        assertEquals(3, idx.search(new float[] {1f, 0f}, 10).size());
    }
}
