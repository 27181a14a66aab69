package io.probscale.edge.core;

import java.io.ByteArrayOutputStream;
import java.io.FileNotFoundException;
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

    /**
     * Reads manifest.json from the source (at most {@link BundleManifest#MAX_MANIFEST_BYTES}), checks that its bytes
     * hash to the sha256 in manifest.sha256, then its schema.
     */
    public static BundleManifest readManifest(BundleSource src) throws BundleException {
        byte[] raw;
        String got;
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            got = hex(digest(new LimitedStream(src.open(BundleManifest.MANIFEST), BundleManifest.MAX_MANIFEST_BYTES), out));
            raw = out.toByteArray();
        } catch (FileNotFoundException e) {
            throw new BundleException("no manifest.json in " + src.describe() + ", so it is not a probscale-edge bundle (or is incomplete)",
                    "copy a bundle from `probscale-edge build --target android` into app/src/main/assets/bundle/");
        } catch (IOException e) {
            throw new BundleException("manifest.json in " + src.describe() + " cannot be read (" + e.getMessage() + ")",
                    BundleManifest.REBUILD);
        }
        Map<String, Object> json = BundleManifest.parseJson(new String(raw, UTF8));
        String want;
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            digest(new LimitedStream(src.open(BundleManifest.DIGEST), 1024), out);
            want = new String(out.toByteArray(), UTF8);
        } catch (IOException e) {
            throw new BundleException("the bundle has no " + BundleManifest.DIGEST + " (the digest of its manifest)",
                    "rebuild the bundle with a current probscale-edge (older builds did not write it)");
        }
        if (!want.matches("[0-9a-f]{64}  manifest\\.json\n?")) {
            throw new BundleException(BundleManifest.DIGEST + " is not one line '<sha256>  manifest.json'", BundleManifest.REBUILD);
        }
        if (!want.substring(0, 64).equals(got)) {
            throw new BundleException("manifest.json does not match its checksum in " + BundleManifest.DIGEST + " (altered or corrupt)",
                    "copy the bundle again from its source, or rebuild it; do not edit manifest.json");
        }
        return BundleManifest.fromJson(json);
    }

    /**
     * Verifies the bundle: manifest and its digest, then (if the source can list) no link, special or unlisted
     * file, then every listed file (missing, wrong size or wrong sha256 is refused), then labels.json against the
     * manifest's labels. Keeps the bytes of the model and tokenizer files.
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
        checkListing(src, m, allowExtra);
        Set<String> kept0 = new java.util.HashSet<String>(keep);
        kept0.add(BundleManifest.LABELS);
        Map<String, byte[]> kept = new HashMap<String, byte[]>();
        for (Map.Entry<String, BundleManifest.FileEntry> e : m.files.entrySet()) {
            byte[] b = checkFile(src, e.getKey(), e.getValue(), kept0.contains(e.getKey()));
            if (b != null) {
                kept.put(e.getKey(), b);
            }
        }
        byte[] labels = keep.contains(BundleManifest.LABELS) ? kept.get(BundleManifest.LABELS) : kept.remove(BundleManifest.LABELS);
        if (labels != null) {
            checkLabels(m, new String(labels, UTF8));
        }
        return new VerifiedBundle(m, kept);
    }

    private static byte[] checkFile(BundleSource src, String name, BundleManifest.FileEntry want, boolean keep)
            throws BundleException {
        InputStream in;
        try {
            in = src.open(name);
        } catch (FileNotFoundException ex) {
            throw new BundleException("bundle file " + name + " is missing", "copy the complete bundle folder, or rebuild it");
        } catch (IOException ex) {
            throw new BundleException("bundle file " + name + " cannot be read (" + ex.getMessage() + ")",
                    "a bundle holds regular files only: copy it again without links");
        }
        ByteArrayOutputStream out = keep ? new ByteArrayOutputStream((int) Math.min(want.bytes, 1 << 30)) : null;
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
        return out == null ? null : out.toByteArray();
    }

    /** labels.json (when the bundle lists it) must hold exactly the manifest's labels, in order. */
    static void checkLabels(BundleManifest m, String text) throws BundleException {
        Object v;
        try {
            v = Json.parse(text, BundleManifest.MAX_JSON_DEPTH, true);
        } catch (IllegalArgumentException e) {
            throw new BundleException("labels.json is not valid JSON (" + e.getMessage() + ")", BundleManifest.REBUILD);
        }
        if (!m.labels.equals(v)) {
            throw new BundleException("labels.json and manifest.json disagree on the labels (" + v + " vs " + m.labels + ")",
                    "rebuild the bundle; do not edit its labels");
        }
    }

    private static void checkListing(BundleSource src, BundleManifest m, boolean allowExtra) throws BundleException {
        List<String> present;
        try {
            present = src.list();
        } catch (IOException ex) {
            throw new BundleException("bundle " + src.describe() + " cannot be listed (" + ex.getMessage() + ")",
                    "a bundle holds regular files only: copy it again without links or special files");
        }
        if (present == null || allowExtra) {
            return;
        }
        List<String> extra = new ArrayList<String>();
        for (String p : present) {
            if (!p.equals(BundleManifest.MANIFEST) && !p.equals(BundleManifest.DIGEST) && !p.equals(BundleManifest.SIGNATURE)
                    && !m.files.containsKey(p)) {
                extra.add(p);
            }
        }
        Collections.sort(extra);
        if (!extra.isEmpty()) {
            throw new BundleException("bundle has files not in its manifest: " + join(extra.subList(0, Math.min(3, extra.size()))),
                    "remove them, or rebuild the bundle");
        }
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

    /** Refuses to read past {@code limit} bytes (manifests are small; a huge one is not a manifest). */
    private static final class LimitedStream extends java.io.FilterInputStream {
        private final long limit;
        private long count;

        LimitedStream(InputStream in, long limit) {
            super(in);
            this.limit = limit;
        }

        private int counted(int r) throws IOException {
            if (r > 0 && (count += r) > limit) {
                throw new IOException("larger than " + limit + " bytes");
            }
            return r;
        }

        @Override
        public int read() throws IOException {
            int r = super.read();
            counted(r >= 0 ? 1 : 0);
            return r;
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            return counted(super.read(b, off, len));
        }
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
