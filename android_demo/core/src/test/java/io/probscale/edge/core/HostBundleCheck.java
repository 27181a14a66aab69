package io.probscale.edge.core;

import java.io.File;

/**
 * Assets wiring check (run by run_host_tests.sh when a real bundle is available): verifies the copy in
 * an assets/bundle folder exactly as the app does, builds its tokenizer and encodes a sentence.
 *   java io.probscale.edge.core.HostBundleCheck ASSETS_BUNDLE_DIR
 */
public final class HostBundleCheck {
    private HostBundleCheck() {}

    public static void main(String[] args) throws Exception {
        File dir = new File(args[0]);
        try {
            BundleVerifier.VerifiedBundle b = BundleVerifier.verify(new FileBundleSource(dir), false);
            BundleManifest m = b.manifest;
            BertTokenizer t = b.tokenizer();
            Encoding e = t.encode(Benchmark.DEFAULT_TEXT);
            System.out.println("BUNDLE_OK " + dir + ": " + m.files.size() + " files verified, model " + m.modelFile + " ("
                    + m.precision + ", " + m.files.get(m.modelFile).bytes + " bytes), inputs " + m.inputs + ", labels "
                    + m.labels + ", vocab " + t.vocabSize() + ", default text -> " + e.length() + " tokens");
        } catch (BundleException ex) {
            System.out.println("BUNDLE_REFUSED " + ex.getMessage());
            System.exit(1);
        }
    }
}
