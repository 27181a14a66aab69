package io.probscale.edge.demo;

import android.content.Context;

import io.probscale.edge.core.BundleException;
import io.probscale.edge.core.BundleVerifier;
import io.probscale.edge.core.TextClassifier;
import io.probscale.edge.demo.engine.OrtBackend;

/** Verifies the bundle in assets and builds the classifier; call off the UI thread. */
final class ClassifierHolder {
    /** A ready classifier, with what the screens show about it. */
    static final class Loaded {
        final BundleVerifier.VerifiedBundle bundle;
        final OrtBackend backend;
        final TextClassifier classifier;
        final int threads;

        Loaded(BundleVerifier.VerifiedBundle bundle, OrtBackend backend, int threads) {
            this.bundle = bundle;
            this.backend = backend;
            this.threads = threads;
            this.classifier = new TextClassifier(bundle.tokenizer(), backend, bundle.manifest.labels);
        }
    }

    private static BundleVerifier.VerifiedBundle verified;

    private ClassifierHolder() {}

    /** Verifies every file's sha256 against manifest.json once per process, then reuses the bytes. */
    static synchronized BundleVerifier.VerifiedBundle bundle(Context ctx) throws BundleException {
        if (verified == null) {
            verified = BundleVerifier.verify(new AssetBundleSource(ctx.getAssets()), false);
        }
        return verified;
    }

    /** A new session with the given intra-op thread count (0 = ONNX Runtime default). */
    static Loaded load(Context ctx, int threads) throws Exception {
        BundleVerifier.VerifiedBundle b = bundle(ctx);
        return new Loaded(b, OrtBackend.create(b, threads), threads);
    }
}
