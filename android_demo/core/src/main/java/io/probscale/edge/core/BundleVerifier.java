package io.probscale.edge.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.Charset;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Reads manifest.json and checks every listed file's size and sha256 before anything is loaded.
 * The bytes of the files the app needs are kept from the same read that was hashed, so what is
 * loaded is exactly what was verified.
 */
public final class BundleVerifier {
    private static final Charset UTF8 = Charset.forName("UTF-8");

    private BundleVerifier() {}

    /** A bundle whose manifest parsed and whose files all matched their checksums. */
    public static final class VerifiedBundle {
        public final BundleManifest manifest;
        private final Map<String, byte[]> kept;

        VerifiedBundle(BundleManifest manifest, Map<String, byte[]> kept) {
            this.manifest = manifest;
            this.kept = kept;
        }

        /** Bytes of a verified file that was asked to be kept. */
        public byte[] bytes(String name) {
            byte[] b = kept.get(name);
            if (b == null) {
                throw new IllegalStateException(name + " was not kept when the bundle was verified");
            }
            return b;
        }

        public String text(String name) {
            return new String(bytes(name), UTF8);
        }

        /** The tokenizer this bundle describes: tokenizer.json if present, else vocab.txt. */
        public BertTokenizer tokenizer() {
            BundleManifest m = manifest;
            if (kept.containsKey(m.tokenizerFile)) {
                return BertTokenizer.fromTokenizerJson(text(m.tokenizerFile), m.maxLength);
            }
            return BertTokenizer.fromVocabTxt(text(m.vocabFile), m.doLowerCase, m.maxLength);
        }
    }

    /** Lower-case hex sha256 of a stream (closes it). */
    public static String sha256(InputStream in) throws IOException {
        return hex(digest(in, null));
    }

    private static byte[] digest(InputStream in, ByteArrayOutputStream keep) throws IOException {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        try {
            byte[] buf = new byte[1 << 16];
            int r;
            while ((r = in.read(buf)) > 0) {
                md.update(buf, 0, r);
                if (keep != null) {
                    keep.write(buf, 0, r);
                }
            }
        } finally {
            in.close();
        }
        return md.digest();
    }

    static String hex(byte[] d) {
        StringBuilder b = new StringBuilder(d.length * 2);
        for (byte x : d) {
            b.append(Character.forDigit((x >> 4) & 0xf, 16)).append(Character.forDigit(x & 0xf, 16));
        }
        return b.toString();
    }

    /** Reads manifest.json from the source. */
    public static BundleManifest readManifest(BundleSource src) throws BundleException {
        byte[] raw;
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            digest(src.open(BundleManifest.MANIFEST), out);
            raw = out.toByteArray();
        } catch (IOException e) {
            throw new BundleException("no manifest.json in " + src.describe() + ", so it is not a probscale-edge bundle (or is incomplete)",
                    "copy a bundle from `probscale-edge build --target android` into app/src/main/assets/bundle/");
        }
        return BundleManifest.parse(new String(raw, UTF8));
    }

    /**
     * Verifies the bundle: manifest, then every listed file (missing, wrong size or wrong sha256 is refused),
     * then (if the source can list) no unlisted files. Keeps the bytes of the model and tokenizer files.
     */
    public static VerifiedBundle verify(BundleSource src, boolean allowExtra) throws BundleException {
        BundleManifest m = readManifest(src);
        Set<String> keep = new java.util.HashSet<String>();
        keep.add(m.modelFile);
        if (m.files.containsKey(m.tokenizerFile)) {
            keep.add(m.tokenizerFile);
        } else {
            keep.add(m.vocabFile);
        }
        return verify(src, m, keep, allowExtra);
    }

    public static VerifiedBundle verify(BundleSource src, BundleManifest m, Set<String> keep, boolean allowExtra)
            throws BundleException {
        Map<String, byte[]> kept = new HashMap<String, byte[]>();
        for (Map.Entry<String, BundleManifest.FileEntry> e : m.files.entrySet()) {
            String name = e.getKey();
            BundleManifest.FileEntry want = e.getValue();
            InputStream in;
            try {
                in = src.open(name);
            } catch (IOException ex) {
                throw new BundleException("bundle file " + name + " is missing", "copy the complete bundle folder, or rebuild it");
            }
            ByteArrayOutputStream out = keep.contains(name) ? new ByteArrayOutputStream((int) Math.min(want.bytes, 1 << 30)) : null;
            CountingStream counted = new CountingStream(in);
            String got;
            try {
                got = hex(digest(counted, out));
            } catch (IOException ex) {
                throw new BundleException("bundle file " + name + " could not be read (" + ex.getMessage() + ")", "copy the bundle again");
            }
            if (counted.count != want.bytes || !got.equals(want.sha256)) {
                throw new BundleException("bundle file " + name + " does not match its checksum in manifest.json (altered or corrupt)"
                        + (counted.count != want.bytes ? ": " + counted.count + " bytes, expected " + want.bytes : ""),
                        "copy the bundle again from its source, or rebuild it");
            }
            if (out != null) {
                kept.put(name, out.toByteArray());
            }
        }
        if (!allowExtra) {
            List<String> present;
            try {
                present = src.list();
            } catch (IOException ex) {
                present = null;
            }
            if (present != null) {
                List<String> extra = new ArrayList<String>();
                for (String p : present) {
                    if (!p.equals(BundleManifest.MANIFEST) && !m.files.containsKey(p)) {
                        extra.add(p);
                    }
                }
                Collections.sort(extra);
                if (!extra.isEmpty()) {
                    throw new BundleException("bundle has files not in its manifest: " + join(extra.subList(0, Math.min(3, extra.size()))),
                            "remove them, or rebuild the bundle");
                }
            }
        }
        return new VerifiedBundle(m, kept);
    }

    private static String join(List<String> l) {
        StringBuilder b = new StringBuilder();
        for (String s : l) {
            if (b.length() > 0) {
                b.append(", ");
            }
            b.append(s);
        }
        return b.toString();
    }

    private static final class CountingStream extends java.io.FilterInputStream {
        long count;

        CountingStream(InputStream in) {
            super(in);
        }

        @Override
        public int read() throws IOException {
            int r = super.read();
            if (r >= 0) {
                count++;
            }
            return r;
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            int r = super.read(b, off, len);
            if (r > 0) {
                count += r;
            }
            return r;
        }
    }
}
