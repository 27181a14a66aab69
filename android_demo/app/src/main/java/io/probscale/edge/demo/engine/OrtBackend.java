package io.probscale.edge.demo.engine;

import java.nio.LongBuffer;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;

import io.probscale.edge.core.BundleException;
import io.probscale.edge.core.BundleManifest;
import io.probscale.edge.core.BundleVerifier;
import io.probscale.edge.core.EmbeddingBackend;
import io.probscale.edge.core.Encoding;
import io.probscale.edge.core.InferenceBackend;

/**
 * The ONNX Runtime side: one {@link OrtSession} created from the verified model bytes, run at batch 1.
 *
 * <p>No android.* imports on purpose: this class is compile-checked on the host against the ORT
 * Android AAR's classes.jar (see run_host_tests.sh). Works with model.onnx and model.ort alike.
 */
public final class OrtBackend implements InferenceBackend, EmbeddingBackend, AutoCloseable {
    public static final String NAME = "onnxruntime-android";

    private final OrtEnvironment env;
    private final OrtSession session;
    private final List<String> inputs;
    private final String output;
    private final int numLabels;
    /** Milliseconds spent creating the session. */
    public final double initMs;

    private OrtBackend(OrtEnvironment env, OrtSession session, BundleManifest m, double initMs) {
        this.env = env;
        this.session = session;
        this.inputs = m.inputs;
        this.output = m.outputs.get(0);
        this.numLabels = m.labels.size();
        this.initMs = initMs;
    }

    /**
     * Creates the session from a bundle that has already passed {@link BundleVerifier#verify}.
     *
     * @param threads intra-op threads; 0 or less leaves ONNX Runtime's default
     */
    public static OrtBackend create(BundleVerifier.VerifiedBundle bundle, int threads) throws OrtException, BundleException {
        BundleManifest m = bundle.manifest;
        byte[] model = bundle.bytes(m.modelFile);
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        OrtSession.SessionOptions opts = new OrtSession.SessionOptions();
        try {
            if (threads > 0) {
                opts.setIntraOpNumThreads(threads);
            }
            opts.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
            if (m.modelFile.endsWith(".ort")) {
                // ORT-format models from `--target android` are already optimized for the minimal build
                opts.addConfigEntry("session.load_model_format", "ORT");
            }
            long t0 = System.nanoTime();
            OrtSession s = env.createSession(model, opts);
            double ms = (System.nanoTime() - t0) / 1e6;
            Set<String> names = s.getInputNames();
            for (String want : m.inputs) {
                if (!names.contains(want)) {
                    s.close();
                    throw new BundleException("the model has no input named " + want + " (it has " + names + ")",
                            "rebuild the bundle; manifest model.inputs must match the model");
                }
            }
            if (!s.getOutputNames().contains(m.outputs.get(0))) {
                String have = s.getOutputNames().toString();
                s.close();
                throw new BundleException("the model has no output named " + m.outputs.get(0) + " (it has " + have + ")",
                        "rebuild the bundle");
            }
            return new OrtBackend(env, s, m, ms);
        } finally {
            opts.close();
        }
    }

    @Override
    public float[] logits(Encoding enc) throws OrtException {
        long[] shape = {1, enc.length()};
        Map<String, OnnxTensor> feed = new HashMap<String, OnnxTensor>();
        try {
            for (String name : inputs) {
                feed.put(name, OnnxTensor.createTensor(env, LongBuffer.wrap(enc.input(name)), shape));
            }
            OrtSession.Result r = session.run(feed);
            try {
                Optional<OnnxValue> v = r.get(output);
                if (!v.isPresent()) {
                    throw new IllegalStateException("the model returned no " + output);
                }
                float[][] out = (float[][]) v.get().getValue();
                if (out.length != 1 || out[0].length != numLabels) {
                    throw new IllegalStateException("expected logits of shape [1, " + numLabels + "]");
                }
                return out[0];
            } finally {
                r.close();
            }
        } finally {
            for (OnnxTensor t : feed.values()) {
                t.close();
            }
        }
    }

    /** An embedding bundle's model: token embeddings [tokens][width] of one text (batch 1). */
    @Override
    public float[][] tokenEmbeddings(Encoding enc) throws OrtException {
        long[] shape = {1, enc.length()};
        Map<String, OnnxTensor> feed = new HashMap<String, OnnxTensor>();
        try {
            for (String name : inputs) {
                feed.put(name, OnnxTensor.createTensor(env, LongBuffer.wrap(enc.input(name)), shape));
            }
            OrtSession.Result r = session.run(feed);
            try {
                Optional<OnnxValue> v = r.get(output);
                if (!v.isPresent()) {
                    throw new IllegalStateException("the model returned no " + output);
                }
                float[][][] out = (float[][][]) v.get().getValue();
                if (out.length != 1 || out[0].length != enc.length()) {
                    throw new IllegalStateException("expected token embeddings of shape [1, " + enc.length() + ", width]");
                }
                return out[0];
            } finally {
                r.close();
            }
        } finally {
            for (OnnxTensor t : feed.values()) {
                t.close();
            }
        }
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public void close() throws OrtException {
        session.close();
    }
}
