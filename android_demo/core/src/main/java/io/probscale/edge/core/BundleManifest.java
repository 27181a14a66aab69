package io.probscale.edge.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The parts of a bundle's manifest.json this app uses (format_version 1, see runtime/bundle.py), checked against
 * the same schema as the Python runtime: every file name it uses is a plain relative path listed in "files",
 * labels are unique strings, max_length is in [2, 8192] (and within max_position_embeddings when recorded).
 */
public final class BundleManifest {
    public static final int FORMAT_VERSION = 1;
    public static final String MANIFEST = "manifest.json";
    /** sha256 of manifest.json's bytes: {@code "<64 hex>  manifest.json\n"} (runtime.bundle.write_manifest). */
    public static final String DIGEST = "manifest.sha256";
    /** Optional model-signing signature (runtime/signing.py); not checked by this app, but allowed. */
    public static final String SIGNATURE = "bundle.sig";
    public static final String LABELS = "labels.json";
    public static final int MAX_MANIFEST_BYTES = 8 << 20;
    public static final int MAX_JSON_DEPTH = 64;
    public static final int MIN_LENGTH = 2;
    public static final int MAX_LENGTH = 8192;
    static final String REBUILD = "rebuild the bundle with `probscale-edge build`; do not edit its files";

    /** One entry of manifest "files": expected sha256 (lower-case hex) and size. */
    public static final class FileEntry {
        public final String sha256;
        public final long bytes;

        FileEntry(String sha256, long bytes) {
            this.sha256 = sha256;
            this.bytes = bytes;
        }
    }

    public final int formatVersion;
    public final List<String> labels;
    public final String modelFile;
    public final String modelFormat;
    public final String precision;
    public final List<String> inputs;
    public final List<String> outputs;
    public final String tokenizerFile;
    public final String vocabFile;
    public final int maxLength;
    public final int padId;
    public final boolean doLowerCase;
    public final Map<String, FileEntry> files;
    /** "classify" (labels), or "embed": an embedding bundle (no labels; the model outputs token embeddings). */
    public final String kind;
    /** Embedding bundles: the width of the embedding, the pooling (mean | cls) and whether it is L2-normalized. */
    public final int embeddingDimension;
    public final String embeddingPooling;
    public final boolean embeddingNormalize;

    private BundleManifest(Map<String, Object> m) throws BundleException {
        formatVersion = formatVersion(m);
        files = fileEntries(m.get("files"));
        Object k = m.get("kind");
        kind = k instanceof String ? (String) k : "classify";
        labels = m.containsKey("labels") || !"embed".equals(kind) ? strings(m.get("labels"), "labels")
                : Collections.<String>emptyList();
        if ("embed".equals(kind)) {
            if (!labels.isEmpty()) {
                throw new BundleException("manifest.json of an embedding bundle lists labels", REBUILD);
            }
            Map<String, Object> e = section(m, "embedding");
            Object dim = e.get("dimension");
            if (!(dim instanceof Long) || (Long) dim < 1 || (Long) dim > 65536) {
                throw new BundleException("manifest.json embedding.dimension is not a whole number in [1, 65536]", REBUILD);
            }
            embeddingDimension = ((Long) dim).intValue();
            embeddingPooling = str(e, "pooling", "embedding.pooling", null);
            if (!SentencePooling.MEAN.equals(embeddingPooling) && !SentencePooling.CLS.equals(embeddingPooling)) {
                throw new BundleException("manifest.json embedding.pooling is not one of mean, cls", REBUILD);
            }
            if (!(e.get("normalize") instanceof Boolean)) {
                throw new BundleException("manifest.json embedding.normalize is not true/false", REBUILD);
            }
            embeddingNormalize = (Boolean) e.get("normalize");
        } else {
            embeddingDimension = 0;
            embeddingPooling = null;
            embeddingNormalize = false;
        }
        if (labels.isEmpty() && !"embed".equals(kind)) {
            throw new BundleException("manifest.json lists no labels", REBUILD);
        }
        if (new java.util.HashSet<String>(labels).size() != labels.size()) {
            throw new BundleException("manifest.json labels are not unique", REBUILD);
        }
        Map<String, Object> model = section(m, "model");
        modelFile = listed(str(model, "file", "model.file", null), "model.file");
        modelFormat = str(model, "format", "model.format", "onnx");
        precision = str(model, "precision", "model.precision", "fp32");
        inputs = model.containsKey("inputs") ? strings(model.get("inputs"), "model.inputs")
                : Collections.unmodifiableList(java.util.Arrays.asList("input_ids", "attention_mask", "token_type_ids"));
        outputs = model.containsKey("outputs") ? strings(model.get("outputs"), "model.outputs")
                : Collections.singletonList("logits");
        Map<String, Object> tok = section(m, "tokenizer");
        tokenizerFile = str(tok, "file", "tokenizer.file", null);
        if (!safePath(tokenizerFile)) {
            throw new BundleException("manifest.json tokenizer.file is an unsafe path '" + tokenizerFile + "'", REBUILD);
        }
        Object vf = tok.get("vocab_file");
        if (vf != null && !(vf instanceof String)) {
            throw new BundleException("manifest.json tokenizer.vocab_file is not a string", REBUILD);
        }
        vocabFile = vf == null ? null : listed((String) vf, "tokenizer.vocab_file");
        Object positions = model.get("max_position_embeddings");
        if (positions != null && !(positions instanceof Long && (Long) positions >= MIN_LENGTH)) {
            throw new BundleException("manifest.json model.max_position_embeddings is not a whole number >= 2", REBUILD);
        }
        long top = positions == null ? MAX_LENGTH : Math.min(MAX_LENGTH, (Long) positions);
        Object ml = tok.get("max_length");
        if (!(ml instanceof Long) || (Long) ml < MIN_LENGTH || (Long) ml > top) {
            throw new BundleException("manifest.json tokenizer.max_length is " + ml + ", not a whole number in ["
                    + MIN_LENGTH + ", " + top + "]", REBUILD);
        }
        maxLength = ((Long) ml).intValue();
        Object pad = tok.containsKey("pad_id") ? tok.get("pad_id") : Long.valueOf(0);
        if (!(pad instanceof Long) || (Long) pad < 0 || (Long) pad >= Integer.MAX_VALUE) {
            throw new BundleException("manifest.json tokenizer.pad_id is not a token id", REBUILD);
        }
        padId = ((Long) pad).intValue();
        Object lc = tok.get("do_lower_case");
        if (lc != null && !(lc instanceof Boolean)) {
            throw new BundleException("manifest.json tokenizer.do_lower_case is not true/false", REBUILD);
        }
        doLowerCase = !Boolean.FALSE.equals(lc);
        if (!files.containsKey(tokenizerFile) && vocabFile == null) {
            throw new BundleException("tokenizer file " + tokenizerFile + " is not listed in manifest files", REBUILD);
        }
    }

    /** An embedding bundle ({@code "kind": "embed"}): use {@link TextEmbedder}, not {@link TextClassifier}. */
    public boolean isEmbedding() {
        return "embed".equals(kind);
    }

    private static int formatVersion(Map<String, Object> m) throws BundleException {
        Object fv = m.get("format_version");
        if (!(fv instanceof Long) || (Long) fv < 1) {
            throw new BundleException("manifest.json has no format_version", "rebuild the bundle with `probscale-edge build`");
        }
        if ((Long) fv > FORMAT_VERSION) {
            throw new BundleException("bundle format " + fv + " is newer than this app supports (" + FORMAT_VERSION + ")",
                    "update the app, or rebuild the bundle with a matching probscale-edge");
        }
        return ((Long) fv).intValue();
    }

    private static Map<String, FileEntry> fileEntries(Object fo) throws BundleException {
        if (!(fo instanceof Map)) {
            throw new BundleException("manifest.json files is not an object of {name: {sha256, bytes}}", REBUILD);
        }
        if (((Map<?, ?>) fo).isEmpty()) {
            throw new BundleException("manifest.json lists no files", REBUILD);
        }
        Map<String, FileEntry> f = new LinkedHashMap<String, FileEntry>();
        for (Map.Entry<?, ?> e : ((Map<?, ?>) fo).entrySet()) {
            String name = String.valueOf(e.getKey());
            if (!safePath(name)) {
                throw new BundleException("manifest lists an unsafe path '" + name + "'", "rebuild the bundle; do not edit manifest.json");
            }
            if (name.equals(MANIFEST) || name.equals(DIGEST) || name.equals(SIGNATURE)) {
                throw new BundleException("manifest.json lists " + name + ", which cannot checksum itself", REBUILD);
            }
            if (!(e.getValue() instanceof Map)) {
                throw new BundleException("manifest entry for " + name + " is not an object", REBUILD);
            }
            Map<?, ?> meta = (Map<?, ?>) e.getValue();
            Object sha = meta.get("sha256");
            Object bytes = meta.get("bytes");
            if (!(sha instanceof String) || !((String) sha).matches("[0-9a-f]{64}") || !(bytes instanceof Long) || (Long) bytes < 0) {
                throw new BundleException("manifest entry for " + name + " has no valid sha256/bytes", REBUILD);
            }
            f.put(name, new FileEntry((String) sha, (Long) bytes));
        }
        return Collections.unmodifiableMap(f);
    }

    /** {@code name} if it is a safe path that "files" lists (so it is checksummed). */
    private String listed(String name, String where) throws BundleException {
        if (!safePath(name)) {
            throw new BundleException("manifest.json " + where + " is an unsafe path '" + name + "' (absolute, `..` or outside the bundle)",
                    REBUILD);
        }
        if (!files.containsKey(name)) {
            throw new BundleException("manifest.json " + where + " '" + name + "' is not one of the bundle's checksummed files", REBUILD);
        }
        return name;
    }

    /** Parses manifest.json text (no digest check: {@link BundleVerifier#readManifest} makes it). */
    public static BundleManifest parse(String json) throws BundleException {
        return fromJson(parseJson(json));
    }

    /**
     * The manifest's JSON object: bounded nesting, no duplicate keys; a newer format_version is refused here,
     * before the digest is checked (a newer format may record it differently).
     */
    static Map<String, Object> parseJson(String json) throws BundleException {
        Object root;
        try {
            root = Json.parse(json, MAX_JSON_DEPTH, true);
        } catch (IllegalArgumentException e) {
            throw new BundleException("manifest.json is not valid JSON (" + e.getMessage() + ")", REBUILD);
        }
        if (!(root instanceof Map)) {
            throw new BundleException("manifest.json is not a JSON object", REBUILD);
        }
        Map<String, Object> m = Json.obj(root, "manifest");
        Object fv = m.get("format_version");
        if (fv instanceof Long && (Long) fv > FORMAT_VERSION) {
            formatVersion(m);
        }
        return m;
    }

    static BundleManifest fromJson(Map<String, Object> m) throws BundleException {
        try {
            return new BundleManifest(m);
        } catch (ClassCastException | IllegalArgumentException e) {
            throw new BundleException("manifest.json has an unexpected layout (" + e.getMessage() + ")", REBUILD);
        }
    }

    /** A plain relative path inside a bundle: "/"-separated, no "..", no dot-files, no drive or control characters. */
    static boolean safePath(String name) {
        if (name == null || name.isEmpty() || name.length() > 1024 || name.startsWith("/") || name.contains("\\")
                || name.contains(":")) {
            return false;
        }
        for (int k = 0; k < name.length(); k++) {
            if (name.charAt(k) < 32) {
                return false;
            }
        }
        for (String part : name.split("/", -1)) {
            if (part.isEmpty() || part.startsWith(".") || part.length() > 255) {
                return false;
            }
        }
        return true;
    }

    private static Map<String, Object> section(Map<String, Object> m, String key) throws BundleException {
        Object v = m.get(key);
        if (!(v instanceof Map)) {
            throw new BundleException("manifest.json has no '" + key + "' section", "rebuild the bundle");
        }
        return Json.obj(v, key);
    }

    private static String str(Map<String, Object> m, String key, String where, String dflt) throws BundleException {
        Object v = m.get(key);
        if (v instanceof String) {
            return (String) v;
        }
        if (dflt != null && v == null) {
            return dflt;
        }
        throw new BundleException("manifest.json has no " + where, "rebuild the bundle");
    }

    private static List<String> strings(Object v, String where) throws BundleException {
        if (!(v instanceof List)) {
            throw new BundleException("manifest.json " + where + " is not a list of strings", REBUILD);
        }
        List<String> out = new ArrayList<String>();
        for (Object o : (List<?>) v) {
            if (!(o instanceof String)) {
                throw new BundleException("manifest.json " + where + " is not a list of strings", REBUILD);
            }
            out.add((String) o);
        }
        return Collections.unmodifiableList(out);
    }
}
